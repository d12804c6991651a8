"""Small host-side utilities shared by every front end: atomic file and directory writes, progress bars."""
