"""What users call, in two sub-packages (the browser annotator is ``sam2_jax.app``).

image   one image at a time or many: ``Sam2ImagePredictor``, ``Sam2AutomaticMaskGenerator``, ``BatchSegmenter``,
        ``segment_stream`` (``streaming``), ``overlay`` (``visualize``)
video   videos and live frames: ``Sam2VideoPredictor`` (the official interface), ``Sam2VideoSessionModel``
        (transformers' call shapes), ``VideoBatchTracker``, tracking-state checkpoints
"""
