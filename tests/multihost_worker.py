"""One host of the two-host test in test_batch_segmenter.py: ``python multihost_worker.py PROCESS_ID PORT OUT.npz``."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")


def main():
    pid, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    from multihost_inputs import inputs
    from reference import random_params, tiny_test_config

    from sam2_jax import Sam2Model
    from sam2_jax.frontends.image.batch_segmenter import BatchSegmenter

    config = tiny_test_config()
    params = random_params(config, seed=0, video=False)
    seg = BatchSegmenter(Sam2Model(config), params, mode="sharded")
    assert seg.num_devices == 4 and jax.local_device_count() == 2
    result = seg(**inputs(config))
    np.savez(out, **result)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
