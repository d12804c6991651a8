"""``sam2-jax annotate``: a local page to segment photos by clicking, and its JSON API (``docs/annotate_api.md``).

Components, one per module: ``photos`` (the listing of DIR and safe access to its photos), ``worker`` (the one
model thread), ``engine`` (the predictor, embedding cache, predictions and mask-generator jobs), ``store`` (OUT:
annotations.json, masks/, images/, .lock), ``masks`` (RLE, boxes, polygons), ``validation`` (request checks),
``access`` (the token), ``api`` (the handlers) and ``server`` (``create_app``, ``start_server``); the video view's
``video_tracking`` (prompts, the tracking job, OUT's label PNGs and video.json) and ``video_api`` (its handlers,
``server.create_video_app``). ``static/`` holds the page (``index.html``, and ``video.html`` for a video).

``show(images_dir, model, out_dir, height=700)`` starts a loopback server and shows the page in a notebook cell
(``IPython.display.IFrame``); it returns the ``ServerHandle`` (``.url``, ``.stop()``).
"""

from __future__ import annotations


def show(images_dir, model, out_dir, height: int = 700, **kwargs):
    """Start a loopback server on a free port and display its page in the notebook; returns the handle."""
    from IPython.display import IFrame, display

    from .server import start_server

    handle = start_server(images_dir, model, out_dir, **kwargs)
    display(IFrame(handle.url, width="100%", height=height))
    return handle


__all__ = ["show"]
