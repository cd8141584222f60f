"""fused_lstm: fast LSTM for PyTorch, a drop-in for torch.nn.LSTM and nn.LSTMCell.

Hand-written fused kernels own the recurrence (CUDA step and persistent
kernels; a C++ recurrence on CPU); torch does the big GEMMs around them.
"""
from . import functional
from .convert import replace_lstm
from .modules import FusedLSTM, FusedLSTMCell

__version__ = "0.1.0"
__all__ = ["FusedLSTM", "FusedLSTMCell", "replace_lstm", "functional", "__version__"]
