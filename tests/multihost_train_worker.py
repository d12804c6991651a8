"""One process of the two-process training test in test_trainer_multihost.py:
``python multihost_train_worker.py PROCESS_ID PORT DATA HELD OUT RESULT.npz`` (2 CPU devices per process, joined
by ``jax.distributed`` over 127.0.0.1 with gloo collectives). ``run`` is the run both sides do; the test runs it
in-process on 4 devices of one process as the reference. Nothing here imports JAX at import time, so the test can
import ``run`` without changing its own JAX setup."""

import os
import sys

IMAGE, MASK, OBJECTS, BATCH, STEPS = 128, 32, 2, 4, 4


def run(data: str, held: str, out: str, devices=None) -> dict:
    """Fine-tune the decoder of a tiny config (5 Hiera blocks, a 1-layer two-way transformer) at 128 px for 4
    steps of 4 images (``data`` has 4; loader seed 9: with two processes, each caching the embeddings of its own
    rows, step 3 finds every row cached, step 4 the first process's rows cached and not the second's),
    checkpointing at steps 2 and 4 in ``out``, then evaluate on ``held`` and resume a new trainer from ``out``.
    Returns NumPy results: the final params (flat), how many leaves moved, the losses, the held-out mIoU, the
    embedding cache's hits, the resumed trainer's step and loader position (grain's batches consumed) and whether
    its params are the final ones."""
    import dataclasses

    import jax
    import numpy as np
    from reference import random_params, tiny_test_config

    from sam2_jax import Sam2Model
    from sam2_jax.training.data import SegmentationDataset
    from sam2_jax.training.trainer import Trainer

    tiny = tiny_test_config()  # made smaller still: compiling the step is most of the test's time
    vision = tiny.vision_config
    backbone = dataclasses.replace(vision.backbone_config, blocks_per_stage=(1, 1, 2, 1), global_attention_blocks=(3,))
    decoder = dataclasses.replace(tiny.mask_decoder_config, num_hidden_layers=1)
    vision = dataclasses.replace(vision, backbone_config=backbone)
    config = dataclasses.replace(tiny, vision_config=vision, mask_decoder_config=decoder).at_image_size(IMAGE)
    params = random_params(config, seed=0, score_shift=2.0, video=False)
    model = Sam2Model(config, implementation="reference")
    hparams = dict(trainable="decoder", lr=3e-3, steps=STEPS, warmup=1, weight_decay=0.01, batch_size=BATCH, seed=2)
    trainer = Trainer(model, params, devices=devices, **hparams)
    loader = trainer.data_loader(
        SegmentationDataset.from_directory(data), image_size=IMAGE, mask_size=MASK, max_objects=OBJECTS, seed=9
    )
    rows = trainer.fit(loader, out, checkpoint_every=2, log_every=1)
    loader.close()
    miou = trainer.evaluate(None, SegmentationDataset.from_directory(held), mask_size=MASK, max_objects=OBJECTS)
    again = Trainer(model, params, devices=devices, **hparams)
    state = again.resume(out)
    flat = {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_flatten_with_path(
        jax.device_get(trainer.params))[0]}  # fmt: skip
    resumed = jax.device_get(again.params)
    initial = jax.tree_util.tree_leaves(params)
    moved = sum(not np.array_equal(a, b) for a, b in zip(initial, flat.values(), strict=True))
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(resumed), flat.values(), strict=True))
    return dict(
        params=flat,
        losses=np.array([r["loss"] for r in rows]),
        miou=np.float64(miou),
        moved=np.int64(moved),
        resumed_step=np.int64(again.step),
        resumed_position=np.int64(state["iterator"]["next_index"]),
        resumed_same=np.bool_(same),
        cache_hits=np.int64(trainer.cache.hits),
        rows=np.array(trainer.rows),
    )


def main():
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    pid, port, data, held, out, result = int(sys.argv[1]), sys.argv[2], *sys.argv[3:7]
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=pid)
    import numpy as np

    sys.path.insert(0, os.path.dirname(__file__))
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    got = run(data, held, out)
    params = got.pop("params")
    np.savez(result, **got, **{f"param:{k}": v for k, v in params.items()})
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
