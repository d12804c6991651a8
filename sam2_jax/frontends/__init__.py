"""What users call: the image predictor, automatic mask generation, batch and streaming segmentation."""
