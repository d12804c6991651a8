"""Video front ends: what users call to track objects through videos and live frames.

predictor     ``Sam2VideoPredictor``: the official video predictor's interface (init_state, prompts, propagation)
state         ``VideoInferenceState``: the predictor's inference state (records in ``tracking.records``)
prompts       the predictor's point and box prompts checked and converted (masks: ``processing.video.mask_inputs``)
propagation   ``VideoPropagation``: propagating through the video over the memory bank
session       ``Sam2VideoSessionModel``: transformers' ``Sam2VideoModel`` call shapes over inference sessions
              (``tracking.session_state``), whole videos or live frames
batch         ``VideoBatchTracker``: several videos tracked at once, sharded over the devices
checkpoint    saving and restoring a tracking state (``sam2-jax track`` resumes from it)
"""
