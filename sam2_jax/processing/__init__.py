"""Host-side processing: images in, prompts to model space, masks out.

images       decoding, RGB conversion, resizing: (H, W, 3) uint8 -> (S, S, 3) float32
prompts      the one prompt path: validation, scaling to the S x S frame, labels, buckets, padded model inputs
processor    ``Sam2Processor`` (transformers' shape): images + nested prompt lists -> model inputs, and
             ``post_process_masks``: (B, P, M, h, w) logits -> per image (P, M, H, W)
masks        upsampling, stability scores, the non-overlap constraint (jax.numpy, usable under jit)
components   connected components, hole / sprinkle filling and small-region removal
rle          masks (N, H, W) <-> run-length encodings (uncompressed and COCO strings)
boxes        mask boxes, box IoU, NMS
crops        point grids and crop boxes of automatic mask generation
"""
