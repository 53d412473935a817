from typing import Literal

import numpy as np
import numpy.typing as npt

def normalize_u8_to_f32_nhwc(
    images: npt.NDArray[np.uint8],
    out: npt.NDArray[np.float32],
    scale: float,
    mean: list[float],
    std: list[float],
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def normalize_u8_to_f32_nhwc_scalar(
    images: npt.NDArray[np.uint8],
    out: npt.NDArray[np.float32],
    scale: float,
    mean: list[float],
    std: list[float],
) -> npt.NDArray[np.float32]: ...

# Neural-network kernels (register_kernels.cpp); use dlinfer.kernels instead.
def conv2d_nhwc_f32(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None = None,
    strides: tuple[int, int] = (1, 1),
    dilations: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    output_padding: tuple[int, int] = (0, 0),
    groups: int = 1,
    activation: str = "none",
    alpha: float = 0.01,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def conv2d_nhwc_f32_scalar(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None = None,
    strides: tuple[int, int] = (1, 1),
    dilations: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    output_padding: tuple[int, int] = (0, 0),
    groups: int = 1,
    activation: str = "none",
    alpha: float = 0.01,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def conv2d_transpose_nhwc_f32(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None = None,
    strides: tuple[int, int] = (1, 1),
    dilations: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    output_padding: tuple[int, int] = (0, 0),
    groups: int = 1,
    activation: str = "none",
    alpha: float = 0.01,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def conv2d_transpose_nhwc_f32_scalar(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None = None,
    strides: tuple[int, int] = (1, 1),
    dilations: tuple[int, int] = (1, 1),
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    output_padding: tuple[int, int] = (0, 0),
    groups: int = 1,
    activation: str = "none",
    alpha: float = 0.01,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def max_pool2d_nhwc_f32(
    x: npt.NDArray[np.float32],
    pool: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    ceil_mode: bool = False,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def max_pool2d_nhwc_f32_scalar(
    x: npt.NDArray[np.float32],
    pool: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    ceil_mode: bool = False,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def avg_pool2d_nhwc_f32(
    x: npt.NDArray[np.float32],
    pool: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def avg_pool2d_nhwc_f32_scalar(
    x: npt.NDArray[np.float32],
    pool: tuple[int, int],
    strides: tuple[int, int],
    pads: tuple[int, int, int, int] = (0, 0, 0, 0),
    ceil_mode: bool = False,
    count_include_pad: bool = False,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def dense_f32(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None = None,
    activation: str = "none",
    alpha: float = 0.01,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def dense_f32_scalar(
    x: npt.NDArray[np.float32],
    w: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32] | None = None,
    activation: str = "none",
    alpha: float = 0.01,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def softmax_f32(x: npt.NDArray[np.float32], threads: int = 0) -> npt.NDArray[np.float32]: ...
def softmax_f32_scalar(x: npt.NDArray[np.float32], threads: int = 0) -> npt.NDArray[np.float32]: ...
def batch_norm_f32(
    x: npt.NDArray[np.float32],
    gamma: npt.NDArray[np.float32],
    beta: npt.NDArray[np.float32],
    mean: npt.NDArray[np.float32],
    var: npt.NDArray[np.float32],
    epsilon: float = 1e-3,
    axis: int = -1,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def batch_norm_f32_scalar(
    x: npt.NDArray[np.float32],
    gamma: npt.NDArray[np.float32],
    beta: npt.NDArray[np.float32],
    mean: npt.NDArray[np.float32],
    var: npt.NDArray[np.float32],
    epsilon: float = 1e-3,
    axis: int = -1,
    threads: int = 0,
) -> npt.NDArray[np.float32]: ...
def kernel_isa() -> str: ...
def set_kernel_isa(isa: str) -> None: ...
def gathered_bilinear() -> bool: ...
def preprocess_u8_batch(
    images: list[npt.NDArray[np.uint8]],
    out: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    colors: list[str],
    resize: str,
    fit: str,
    crop_ratio: float,
    pad: float,
    scale: float,
    mean: list[float],
    std: list[float],
    layout: str,
    color: str,
    threads: int = 0,
    path: Literal["auto", "gathered", "blend_first"] = "auto",
) -> npt.NDArray[np.float32] | npt.NDArray[np.float16]: ...
def preprocess_u8_stack(
    images: npt.NDArray[np.uint8],
    out: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    order: str,
    resize: str,
    fit: str,
    crop_ratio: float,
    pad: float,
    scale: float,
    mean: list[float],
    std: list[float],
    layout: str,
    color: str,
    threads: int = 0,
    path: Literal["auto", "gathered", "blend_first"] = "auto",
) -> npt.NDArray[np.float32] | npt.NDArray[np.float16]: ...
def preprocess_u8_batch_scalar(
    images: list[npt.NDArray[np.uint8]],
    out: npt.NDArray[np.float32] | npt.NDArray[np.float16],
    colors: list[str],
    resize: str,
    fit: str,
    crop_ratio: float,
    pad: float,
    scale: float,
    mean: list[float],
    std: list[float],
    layout: str,
    color: str,
) -> npt.NDArray[np.float32] | npt.NDArray[np.float16]: ...
def preprocess_geometry(
    height: int, width: int, out_height: int, out_width: int, fit: str, crop_ratio: float = 1.0
) -> tuple[int, int, int, int]: ...
