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
