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
