"""``@triton.jit`` helpers shared by the convolution kernels (``conv2d.py``,
``depthwise_conv2d.py``): where a tile's output pixels are, and the one store of a finished
output tile."""
import triton
import triton.language as tl


@triton.jit
def output_pixel_coords(offs, out_h, out_w):
    """(batch, oh, ow) of flat output-pixel indices ``offs = (batch * OH + oh) * OW + ow``."""
    out_hw = out_h * out_w
    pixel = offs % out_hw
    return offs // out_hw, pixel // out_w, pixel % out_w


@triton.jit
def store_output_tile(y_ptr, tile, batch, oh, ow, channels, pixel_mask, channel_mask,
                      stride_yn, stride_yc, stride_yh, stride_yw):
    """Cast a [pixels, channels] ``tile`` to y's dtype and store it once.

    ``batch``, ``oh``, ``ow`` (per row) and ``channels`` (per column) index y [N, OC, OH, OW]
    through its strides ``stride_y{n,c,h,w}``; masked rows and columns are not written.
    """
    y_ptrs = (y_ptr + (batch * stride_yn + oh * stride_yh + ow * stride_yw)[:, None]
              + channels[None, :] * stride_yc)
    tl.store(y_ptrs, tile.to(y_ptr.dtype.element_ty),
             mask=pixel_mask[:, None] & channel_mask[None, :])
