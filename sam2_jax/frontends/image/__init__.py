"""Image front ends: what users call to segment images.

image_predictor           ``Sam2ImagePredictor``: embed one image, decode many prompts (official shapes)
prompt_decoding           ``ImageEmbedding`` and ``PromptDecoding``: prompts -> masks on an embedded image
warm_up                   ``Sam2ImagePredictor.warm_up``: compile a ``predict`` call before the image is encoded
automatic_mask_generator  ``Sam2AutomaticMaskGenerator``: segment everything from a grid of points
mask_candidates           the generator's candidate masks per batch of points (``batch_records``)
mask_records              the generator's mask records: boxes, stability, RLEs, small-region removal
mask_survivors            masks made only where a predicted IoU passes (``Survivors``)
batch_segmenter           ``BatchSegmenter``: encoder + decoder over a batch split across devices
streaming                 ``segment_stream``: a directory or stream of images to one mask file per image
visualize                 ``overlay``: masks and prompts drawn over an image
"""
