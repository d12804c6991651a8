"""NumPy-side processing: images in, prompts to model space, masks out (upsampling, hole filling, RLE)."""
