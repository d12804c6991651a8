"""Host-side video processing: frames in, model inputs out.

frames       ``VideoFrames``: a video's frames (arrays, image files, a directory or a video file), decoded lazily
files        video file readers (PyAV, optional) and frame iterators behind ``VideoFrames``
processor    ``Sam2VideoProcessor``: transformers' video processor, making and feeding video sessions
mask_inputs  ``mask_prompt``: an (H, W) mask prompt -> the (S, S) 0/1 mask the model takes
"""
