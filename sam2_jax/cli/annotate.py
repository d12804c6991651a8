"""``sam2-jax annotate DIR --model SRC --out OUT``: a local page to segment the photos of DIR by clicking.

DIR may also be a video (a video file, or a directory of ``<int>.jpg`` frames; ``--video`` forces it): the page's
video view (``app.video_tracking``), which writes ``OUT/<frame:05d>.png`` label images as ``sam2-jax track`` does.

In: DIR (its top-level photos), ``--model`` (anything ``sam2_jax.load`` reads), OUT (where annotations.json,
masks/ and images/ go; see ``docs/annotate_api.md``). Out: the first line on stdout is the page's URL (with
``?token=`` when there is one: any ``--host`` other than 127.0.0.1 makes a random token, ``--token`` sets one);
the server runs until Ctrl-C or SIGTERM. OUT in use by another server, a bad DIR or model: ``error: <reason>`` and
exit code 1.
"""

from __future__ import annotations

from .common import add_model_argument, error_line, log


def register(sub) -> None:
    p = sub.add_parser("annotate", help="a local page to segment photos by clicking, saved as COCO + label PNGs")
    p.add_argument(
        "images",
        metavar="DIR",
        help="directory of photos, or a video (a video file or a directory of <int>.jpg frames: the page's video view)",
    )
    p.add_argument("--video", action="store_true", help="DIR is a video even if its names could be photos'")
    add_model_argument(p)
    p.add_argument("--out", required=True, help="output directory (annotations.json, masks/, images/)")
    p.add_argument("--categories", help="comma-separated category names (default: object)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need the token)")
    p.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    p.add_argument("--token", help="access token (default: none on 127.0.0.1, random elsewhere)")
    p.add_argument("--palette", action="store_true", help="video: DAVIS / YouTube-VOS palette label PNGs (ids <= 255)")
    p.add_argument("--cache-mb", type=float, default=1024, help="memory for cached embeddings in MiB (default 1024)")
    p.add_argument("--open", action="store_true", help="open the page in a web browser")
    p.set_defaults(func=run)


def is_video(path) -> bool:
    """A video file, or a directory whose only images are ``<int>.jpg`` / ``.jpeg`` frames."""
    from pathlib import Path

    p = Path(path)
    if p.is_file():
        return True
    if not p.is_dir():
        return False
    images = [f for f in p.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif")]
    return bool(images) and all(f.stem.isdigit() and f.suffix.lower() in (".jpg", ".jpeg") for f in images)


def run(args) -> int:
    import signal
    import sys
    import threading

    from ..app.server import start_server

    categories = [c.strip() for c in args.categories.split(",") if c.strip()] if args.categories else None
    video = args.video or is_video(args.images)
    if args.palette and not video:
        print("error: --palette is for a video (its label PNGs); photos are saved as COCO", file=sys.stderr)
        return 1
    options = {"palette": args.palette} if video else {"cache_mb": args.cache_mb}
    try:
        handle = start_server(
            args.images,
            args.model,
            args.out,
            host=args.host,
            port=args.port,
            categories=categories,
            token=args.token,
            video=video,
            **options,
        )
    except (ValueError, OSError, KeyError) as e:
        print(error_line(e), file=sys.stderr, flush=True)
        return 1
    print(handle.url, flush=True)
    if video:
        log(f"annotating the {handle.app_state.tracking.num_frames} frames of {args.images} into {args.out}; "
            "Ctrl-C stops")  # fmt: skip
    else:
        log(f"annotating {len(handle.app_state.photos)} photos of {args.images} into {args.out}; Ctrl-C stops")
    if args.open:
        import webbrowser

        webbrowser.open(handle.url)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5) and handle.thread.is_alive():
            pass
    except KeyboardInterrupt:
        pass
    finally:
        handle.stop()
    return 0
