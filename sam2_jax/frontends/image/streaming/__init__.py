"""Segment a directory or a stream of images with prompts, writing one mask file per image as it goes.

``segment_stream(segmenter, images, prompts, out_dir)`` runs the whole model (encoder + decoder) over batches
of images on all the segmenter's devices (``frontends.image.batch_segmenter.BatchSegmenter``) while a background
thread decodes and preprocesses the next batches on the host (``prefetch`` batches ahead) and another thread
upsamples and writes the finished ones. A progress bar (tqdm) counts images.

In:
  segmenter  a ``BatchSegmenter``, or ``(model, params)`` (a ``BatchSegmenter`` over all local devices is built)
  images     a directory: every ``.jpg .jpeg .png .bmp .webp`` file directly in it (not hidden, sorted by
             name; the name of an image is its file name without the extension), or an iterable of
             ``(name, image)`` pairs, consumed lazily on the background thread; ``image`` is a path, a PIL
             image or an (H, W[, C]) array. Names must be unique file names (no separators, no leading dot).
  prompts    a mapping ``name -> prompt`` (for a directory a key may also be the full file name) or a
             callable ``name -> prompt``; a prompt is a dict, in original image pixels, of
               points  [object][point][x, y]
               labels  [object][point], 1 foreground / 0 background (default: all 1)
               boxes   [object][x1, y1, x2, y2]
             Objects are matched by index: with both points and boxes there must be as many point lists as
             boxes (a point list may be empty). Prompts go through ``processing.prompts`` like every front
             end's; a box is sent as two corner points (labels 2 and 3, ``prompts.as_corner_points``),
             which the prompt encoder embeds as it embeds ``input_boxes``, so that images with and
             without boxes share one batch and one input shape. An image without a prompt
             (missing key, ``None``, no objects) raises ``ValueError`` naming the image.
Out, per image, written under ``out_dir`` (created if needed):
  fmt="png"  ``<name>.png``: one object -> a binary mask (0 / 255, 8-bit grey); several objects -> a label
             image (0 background, k for object k counted from 1; 8-bit, 16-bit beyond 255 objects) where a
             pixel covered by several masks goes to the object with the highest mask logit. The scores are
             kept in the PNG's ``sam2`` text chunk as JSON (``read_png_scores``).
  fmt="rle"  ``<name>.json``: ``{"name", "height", "width", "objects": [{"segmentation": {"size": [H, W],
             "counts": [...]}, "score", "object_score"}]}``, one entry per object, each mask on its own
             (overlaps kept) as COCO's uncompressed RLE: run lengths over the column-major (Fortran-order)
             flattened mask, starting with a run of zeros (``rle_to_mask`` decodes it).
  ``score`` is the decoder's predicted IoU; with ``multimask_output=True`` the best of the three masks per
  object (highest predicted IoU) is kept. Masks are the logits upsampled (bilinear) to the image size and
  thresholded at ``mask_threshold``, as ``Sam2Processor.post_process_masks`` does.

Static shapes: every batch is padded to ``batch_size`` images, and objects and points per object (box
corners included) to at least 4, then to ``prompts.bucket`` sizes. The padding never shrinks within a
stream (with a mapping of prompts it is sized for the largest prompt up front), so a stream compiles once,
or once more per bucket it grows into. Padded points are masked out of the decoder's attention.

Resume: each file is written with ``utils.atomic.atomic_write`` (a hidden temporary ``.<name>.*.partial`` in
``out_dir``, flushed and renamed into place), so an output exists only once it is complete. Images whose output
already exists are skipped, and leftover ``.partial`` files of a killed run are removed at start (one run per
``out_dir`` at a time). The return value is a ``StreamSummary`` (images done, skipped, seconds).

Modules: ``sources`` (listing, naming and reading images, prompts per image), ``writers`` (PNG / COCO RLE
outputs, ``read_png_scores``), ``stream`` (``segment_stream``, the prefetch thread).
"""

from .sources import IMAGE_EXTENSIONS, list_images
from .stream import StreamSummary, segment_stream
from .writers import FORMATS, read_png_scores

__all__ = ["segment_stream", "StreamSummary", "list_images", "read_png_scores", "IMAGE_EXTENSIONS", "FORMATS"]
