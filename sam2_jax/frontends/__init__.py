"""What users call.

image_predictor           ``Sam2ImagePredictor``: embed one image, decode many prompts (official shapes)
automatic_mask_generator  ``Sam2AutomaticMaskGenerator``: segment everything from a grid of points
batch_segmenter           ``BatchSegmenter``: encoder + decoder over a batch split across devices
streaming                 ``segment_stream``: a directory or stream of images to one mask file per image
visualize                 ``overlay``: masks and prompts drawn over an image
video_predictor           ``Sam2VideoPredictor``: the official video predictor's interface (state, prompts,
                          propagation in ``video_propagation``, prompts checked in ``video_prompts``)
video_session             ``Sam2VideoSessionModel``: transformers' ``Sam2VideoModel`` call shapes over inference
                          sessions (``video_session_state``), whole videos or live frames
video_batch               ``VideoBatchTracker``: several videos tracked at once, sharded over the devices
video_checkpoint          saving and restoring a tracking state (``sam2-jax track`` resumes from it)
"""
