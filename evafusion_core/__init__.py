"""EVAFusion core library: infrared-visible image fusion aligned with human judgement.

Plain PyTorch; never imports ComfyUI. See docs/ARCHITECTURE.md for the module map.
"""

__version__ = "0.1.0"
