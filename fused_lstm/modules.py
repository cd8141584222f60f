"""FusedLSTM and FusedLSTMCell: drop-in replacements for nn.LSTM and nn.LSTMCell.

Same constructor arguments, parameter names, shapes, registration order and
initialisation (so the same seed gives the same weights), state_dict keys,
inputs, outputs and errors (exception type and key message). They subclass
nn.Module, not nn.RNNBase: Dynamo refuses to trace RNNBase subclasses, and
FusedLSTM is meant to work under torch.compile(fullgraph=True).
"""
from __future__ import annotations

import math
import numbers
import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.nn import init
from torch.nn.utils.rnn import PackedSequence

from . import functional

__all__ = ["FusedLSTM", "FusedLSTMCell"]


def _check_int_argument(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} should be of type int, got: {type(value).__name__}")


class FusedLSTM(nn.Module):
    """Multi-layer LSTM with fused recurrence kernels; see torch.nn.LSTM."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device=None, dtype=None) -> None:
        super().__init__()
        # Checks in nn.RNNBase's order, with its exception types and messages.
        if not isinstance(dropout, numbers.Number) or not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError("dropout should be a number in range [0, 1] representing the probability of an "
                             "element being zeroed")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero dropout "
                          f"expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=2)
        if not isinstance(bias, bool):
            raise TypeError(f"bias should be of type bool, got: {type(bias).__name__}")
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first should be of type bool, got: {type(batch_first).__name__}")
        _check_int_argument("input_size", input_size)
        if input_size <= 0:
            raise ValueError("input_size must be greater than zero")
        _check_int_argument("hidden_size", hidden_size)
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        if proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")

        self.mode = "LSTM"
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = proj_size

        factory = {"device": device, "dtype": dtype}
        directions = 2 if bidirectional else 1
        out_size = proj_size if proj_size > 0 else hidden_size
        self._flat_weights_names: List[str] = []
        self._all_weights: List[List[str]] = []
        self._layer_weight_names: List[Tuple[Optional[str], ...]] = []
        for layer in range(num_layers):
            for direction in range(directions):
                layer_input_size = input_size if layer == 0 else out_size * directions
                suffix = f"_l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = [("weight_ih", (4 * hidden_size, layer_input_size)),
                          ("weight_hh", (4 * hidden_size, out_size))]
                if bias:
                    shapes += [("bias_ih", (4 * hidden_size,)), ("bias_hh", (4 * hidden_size,))]
                if proj_size > 0:
                    shapes += [("weight_hr", (proj_size, hidden_size))]
                names = []
                for base, shape in shapes:
                    setattr(self, base + suffix, nn.Parameter(torch.empty(shape, **factory)))
                    names.append(base + suffix)
                self._flat_weights_names.extend(names)
                self._all_weights.append(names)
                named = dict(zip((base for base, _ in shapes), names))
                self._layer_weight_names.append(
                    tuple(named.get(base) for base in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr")))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    @property
    def _flat_weights(self) -> List[Tensor]:
        return [getattr(self, name) for name in self._flat_weights_names]

    @property
    def all_weights(self) -> List[List[nn.Parameter]]:
        return [[getattr(self, name) for name in names] for names in self._all_weights]

    def flatten_parameters(self) -> None:
        """Accepted for nn.LSTM compatibility; the weights are used where they are."""

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.proj_size != 0:
            s += ", proj_size={proj_size}"
        if self.num_layers != 1:
            s += ", num_layers={num_layers}"
        if self.bias is not True:
            s += ", bias={bias}"
        if self.batch_first is not False:
            s += ", batch_first={batch_first}"
        if self.dropout != 0:
            s += ", dropout={dropout}"
        if self.bidirectional is not False:
            s += ", bidirectional={bidirectional}"
        return s.format(**self.__dict__)

    @classmethod
    def from_torch(cls, module: nn.LSTM) -> "FusedLSTM":
        """A FusedLSTM with module's configuration, weights, device, dtype and train/eval mode."""
        from .convert import lstm_from_torch
        return lstm_from_torch(module)

    # -- forward ---------------------------------------------------------------------------------

    def _layer_weights(self) -> List[Tuple[Optional[Tensor], ...]]:
        """(w_ih, w_hh, b_ih, b_hh, w_hr) per layer and direction, None where absent.
        Registered parameters are read from _parameters directly (nn.Module's
        __getattr__ costs ~0.7 us each); anything else (a parametrization, a
        plain tensor put in a parameter's place) through getattr."""
        parameters = self._parameters
        layers = []
        for names in self._layer_weight_names:
            weights = []
            for name in names:
                found = None if name is None else parameters.get(name)
                weights.append(found if found is not None or name is None else getattr(self, name))
            layers.append(tuple(weights))
        return layers

    def _expected_state_sizes(self, batch: int) -> Tuple[Tuple[int, int, int], Tuple[int, int, int]]:
        layers = self.num_layers * (2 if self.bidirectional else 1)
        out_size = self.proj_size if self.proj_size > 0 else self.hidden_size
        return (layers, batch, out_size), (layers, batch, self.hidden_size)

    def _check_forward_args(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]], batch_sizes: Optional[Tensor],
                            weight: Tensor) -> None:
        """nn.LSTM's check_forward_args, then the checks nn.LSTM leaves to its kernel.
        weight: weight_ih_l0. hx None: zero states, which fit by construction."""
        if input.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
            raise ValueError(f"RNN input dtype ({input.dtype}) does not match weight dtype ({weight.dtype}). "
                             f"Convert input: input.to({weight.dtype}), or convert model: model.to({input.dtype})")
        expected_dim = 2 if batch_sizes is not None else 3
        if input.dim() != expected_dim:
            raise RuntimeError(f"input must have {expected_dim} dimensions, got {input.dim()}")
        if self.input_size != input.size(-1):
            raise RuntimeError(f"input.size(-1) must be equal to input_size. Expected {self.input_size}, "
                               f"got {input.size(-1)}")
        if hx is not None:
            if batch_sizes is not None:
                batch = int(batch_sizes[0])
            else:
                batch = input.size(0) if self.batch_first else input.size(1)
            expected_h, expected_c = self._expected_state_sizes(batch)
            for index, (state, expected) in enumerate(zip(hx, (expected_h, expected_c))):
                if state.size() != expected:
                    raise RuntimeError(f"Expected hidden[{index}] size {expected}, got {list(state.size())}")
            for state in hx:
                if state.device != input.device:
                    raise RuntimeError("Input and hidden tensors are not at the same device, found input tensor at "
                                       f"{input.device} and hidden tensor at {state.device}")
                if state.dtype != input.dtype:
                    raise RuntimeError(f"hidden state dtype ({state.dtype}) does not match input dtype "
                                       f"({input.dtype})")
        # (is_cpu first: .device makes a new object, slowly when cold)
        if not (weight.is_cpu and input.is_cpu) and weight.device != input.device:
            raise RuntimeError(f"Input and parameter tensors are not at the same device, found input tensor at "
                               f"{input.device} and parameter tensor at {weight.device}")
        if batch_sizes is None and input.size(1 if self.batch_first else 0) == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

    def forward(self, input, hx: Optional[Tuple[Tensor, Tensor]] = None):
        packed = isinstance(input, PackedSequence)
        batch_sizes = sorted_indices = unsorted_indices = None
        batched = True
        if packed:
            input, batch_sizes, sorted_indices, unsorted_indices = input
        else:
            dim = input.dim()
            if dim not in (2, 3):
                raise ValueError(f"LSTM: Expected input to be 2D or 3D, got {dim}D instead")
            batched = dim == 3
            if not batched:
                input = input.unsqueeze(0 if self.batch_first else 1)
        # hx None stays None down to the kernels: zero states, made only where needed.
        if hx is not None:
            if not packed:
                dims = (hx[0].dim(), hx[1].dim())
                if batched and dims != (3, 3):
                    raise RuntimeError("For batched 3-D input, hx and cx should also be 3-D but got "
                                       f"({dims[0]}-D, {dims[1]}-D) tensors")
                if not batched:
                    if dims != (2, 2):
                        raise RuntimeError("For unbatched 2-D input, hx and cx should also be 2-D but got "
                                           f"({dims[0]}-D, {dims[1]}-D) tensors")
                    hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
            elif sorted_indices is not None:
                hx = (hx[0].index_select(1, sorted_indices), hx[1].index_select(1, sorted_indices))
        weights = self._layer_weights()
        self._check_forward_args(input, hx, batch_sizes, weights[0][0])

        time_major = input.transpose(0, 1) if (self.batch_first and not packed) else input
        output, h_n, c_n = functional.lstm(
            time_major, hx, weights, self.num_layers, dropout=self.dropout, training=self.training,
            bidirectional=self.bidirectional, proj_size=self.proj_size, batch_sizes=batch_sizes)

        if packed:
            if unsorted_indices is not None:
                h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
            return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)
        if self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output = output.squeeze(0 if self.batch_first else 1)
            h_n, c_n = h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)


class FusedLSTMCell(nn.Module):
    """One LSTM cell step with the fused kernels; see torch.nn.LSTMCell."""

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.bias = bias
        self.weight_ih = nn.Parameter(torch.empty((4 * hidden_size, input_size), **factory))
        self.weight_hh = nn.Parameter(torch.empty((4 * hidden_size, hidden_size), **factory))
        if bias:
            self.bias_ih = nn.Parameter(torch.empty(4 * hidden_size, **factory))
            self.bias_hh = nn.Parameter(torch.empty(4 * hidden_size, **factory))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for weight in self.parameters():
            init.uniform_(weight, -stdv, stdv)

    def extra_repr(self) -> str:
        s = "{input_size}, {hidden_size}"
        if self.bias is not True:
            s += ", bias={bias}"
        return s.format(**self.__dict__)

    @classmethod
    def from_torch(cls, module: nn.LSTMCell) -> "FusedLSTMCell":
        """A FusedLSTMCell with module's configuration, weights, device, dtype and train/eval mode."""
        from .convert import lstm_cell_from_torch
        return lstm_cell_from_torch(module)

    def _check_forward_args(self, input: Tensor, hx: Tuple[Tensor, Tensor]) -> None:
        """The checks nn.LSTMCell's kernel makes, in its order and words."""
        if input.size(1) != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.size(1)} expected {self.input_size}")
        for label, state in enumerate(hx):
            if input.size(0) != state.size(0):
                raise RuntimeError(f"Input batch size {input.size(0)} doesn't match hidden{label} batch size "
                                   f"{state.size(0)}")
            if state.size(1) != self.hidden_size:
                raise RuntimeError(f"hidden{label} has inconsistent hidden_size: got {state.size(1)}, expected "
                                   f"{self.hidden_size}")
        weight = self.weight_ih
        for tensor in (input, *hx):
            # torch's message comes from the GEMM of this tensor (mat1) with the weights (mat2).
            if tensor.dtype != weight.dtype and not torch._C._is_any_autocast_enabled():
                raise RuntimeError(f"mat1 and mat2 must have the same dtype, but got {_dtype_name(tensor)} and "
                                   f"{_dtype_name(weight)}")
            if tensor.device != weight.device:
                raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two "
                                   f"devices, {tensor.device} and {weight.device}!")

    def forward(self, input: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        # Plain calls skip the checks below (functional.plain_lstm_cell). The
        # parameters from _parameters (nn.Module.__getattr__ costs ~0.5 us each);
        # a parametrized one is not there (KeyError), and takes the checked path.
        params = self._parameters
        try:
            w_ih, w_hh, b_ih, b_hh = params["weight_ih"], params["weight_hh"], params["bias_ih"], params["bias_hh"]
        except KeyError:
            w_ih = None
        if (hx is not None and w_ih is not None and w_hh is not None and w_ih.shape[-1] == self.input_size
                and w_hh.shape[-1] == self.hidden_size):
            plain = functional.plain_lstm_cell(input, hx, w_ih, w_hh, b_ih, b_hh)
            if plain is not None:
                return plain
        if input.dim() not in (1, 2):
            raise ValueError(f"LSTMCell: Expected input to be 1D or 2D, got {input.dim()}D instead")
        if hx is not None:
            for index, value in enumerate(hx):
                if value.dim() not in (1, 2):
                    raise ValueError(f"LSTMCell: Expected hx[{index}] to be 1D or 2D, got {value.dim()}D instead")
        batched = input.dim() == 2
        if not batched:
            input = input.unsqueeze(0)
        if hx is None:
            zeros = torch.zeros(input.size(0), self.hidden_size, dtype=input.dtype, device=input.device)
            hx = (zeros, zeros)
        elif not batched:
            hx = (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        self._check_forward_args(input, hx)
        h, c = functional.lstm_cell(input, hx, self.weight_ih, self.weight_hh, self.bias_ih, self.bias_hh)
        if torch._C._is_any_autocast_enabled() and torch.is_autocast_enabled(input.device.type):
            # nn.LSTMCell's gates come out of autocast GEMMs, then meet c_prev: its
            # outputs take the promoted dtype of the two.
            dtype = torch.promote_types(torch.get_autocast_dtype(input.device.type), hx[1].dtype)
            h, c = h.to(dtype), c.to(dtype)
        if not batched:
            h, c = h.squeeze(0), c.squeeze(0)
        return h, c


def _dtype_name(tensor: Tensor) -> str:
    """The scalar-type name torch's kernels use in messages (Float, Double, Half, BFloat16)."""
    return {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half",
            torch.bfloat16: "BFloat16"}.get(tensor.dtype, str(tensor.dtype))
