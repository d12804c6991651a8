"""What users call.

image_predictor           ``Sam2ImagePredictor``: embed one image, decode many prompts (official shapes)
automatic_mask_generator  ``Sam2AutomaticMaskGenerator``: segment everything from a grid of points
batch_segmenter           ``BatchSegmenter``: encoder + decoder over a batch split across devices
streaming                 ``segment_stream``: a directory or stream of images to one mask file per image
visualize                 ``overlay``: masks and prompts drawn over an image
"""
