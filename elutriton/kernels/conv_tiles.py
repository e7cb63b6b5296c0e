"""``@triton.jit`` helpers shared by the convolution kernels (``conv2d.py``,
``depthwise_conv2d.py``, ``conv_weight_grad.py``, ``conv_input_grad.py``,
``conv_input_grad_taps.py``, ``split_k_epilogue.py``): an output tile's pixel and channel
indices, where its output pixels are, the input rows of one filter tap, the taps of a flattened
K range and the input tile they read, the output pixel a tap of an input pixel feeds (the
transposed direction), the backward's grad_z tile and its products, and the one store of a
finished output tile."""
import triton
import triton.language as tl

from .elu_math import elu_grad_from_result


@triton.jit
def output_tile_offsets(pid_m, pid_n, n_pixels, n_channels, BLOCK_M: tl.constexpr,
                        BLOCK_N: tl.constexpr, INT64_INDEX: tl.constexpr):
    """(offs_m, offs_n, mask_m, mask_n) of output tile (pid_m, pid_n): BLOCK_M flat output
    pixels (int64 with INT64_INDEX) and BLOCK_N channels, masked to n_pixels and n_channels."""
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if INT64_INDEX:
        offs_m = offs_m.to(tl.int64)
    return offs_m, offs_n, offs_m < n_pixels, offs_n < n_channels


@triton.jit
def output_pixel_coords(offs, out_h, out_w):
    """(batch, oh, ow) of flat output-pixel indices ``offs = (batch * OH + oh) * OW + ow``."""
    out_hw = out_h * out_w
    pixel = offs % out_hw
    return offs // out_hw, pixel // out_w, pixel % out_w


@triton.jit
def flat_k_taps(offs_k, in_per_group, kernel_w):
    """(channel, kh, kw) of flattened K indices ``k = (kh * KW + kw) * Cg + channel``."""
    tap = offs_k // in_per_group
    return offs_k % in_per_group, tap // kernel_w, tap % kernel_w


@triton.jit
def tap_input_rows(x_pixel_ptrs, oh, ow, pixel_mask, kh, kw, in_h, in_w, stride_h, stride_w,
                   pad_h, pad_w, dil_h, dil_w, stride_xh, stride_xw):
    """(pointers, in_image) of filter tap (kh, kw) for each output pixel (oh, ow) of the image
    at ``x_pixel_ptrs``: where its input pixel's channel 0 is, and whether that pixel lies
    inside the image (else it is zero padding) and the row is unmasked."""
    ih = oh * stride_h - pad_h + kh * dil_h
    iw = ow * stride_w - pad_w + kw * dil_w
    in_image = pixel_mask & (ih >= 0) & (ih < in_h) & (iw >= 0) & (iw < in_w)
    return x_pixel_ptrs + ih * stride_xh + iw * stride_xw, in_image


@triton.jit
def load_input_taps(x_pixel_ptrs, oh, ow, pixel_mask, channel, kh, kw, k_mask, in_h, in_w,
                    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                    stride_xc, stride_xh, stride_xw):
    """The [pixels, K] input tile of a flattened K range (im2col, never materialised): row p
    reads output pixel (oh, ow) of the image at ``x_pixel_ptrs[p]``, column k its tap
    (kh, kw) and channel; zero outside the image (padding) and where masked."""
    ih = oh[:, None] * stride_h - pad_h + (kh * dil_h)[None, :]
    iw = ow[:, None] * stride_w - pad_w + (kw * dil_w)[None, :]
    ok = (pixel_mask[:, None] & k_mask[None, :] & (ih >= 0) & (ih < in_h)
          & (iw >= 0) & (iw < in_w))
    return tl.load(x_pixel_ptrs[:, None] + channel[None, :] * stride_xc + ih * stride_xh
                   + iw * stride_xw, mask=ok, other=0.0)


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


@triton.jit
def tap_output_index(in_index, mask, tap, pad, dil, stride, out_size):
    """(output index, ``mask`` where it exists) along one axis: the output row (or column)
    whose filter tap ``tap`` reads input row ``in_index``, only where the stride divides
    exactly and the result lies inside the output (the transposed convolution's gather)."""
    strided = in_index + pad - tap * dil
    out_index = strided // stride
    return out_index, (mask & (strided >= 0) & (out_index * stride == strided)
                       & (out_index < out_size))


@triton.jit
def load_grad_z(grad_y_ptr, y_ptr, offsets, mask, alpha, scale, input_scale,
                ACC_DTYPE: tl.constexpr):
    """grad_z = grad_y * f'(y) in ACC_DTYPE for a tile of grad_y and the saved output y at
    ``offsets`` (the same strides), zero-loaded where masked."""
    grad_y = tl.load(grad_y_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    y = tl.load(y_ptr + offsets, mask=mask, other=0.0).to(ACC_DTYPE)
    return elu_grad_from_result(grad_y, y, alpha, scale, input_scale)


@triton.jit
def dot_grad_z(grad_z, b, acc, INPUT_PRECISION: tl.constexpr, UPCAST_OPERANDS: tl.constexpr,
               ACC_DTYPE: tl.constexpr):
    """acc + grad_z @ b, grad_z rounded to b's dtype as cuDNN's input would be; with
    UPCAST_OPERANDS (bf16 under the interpreter) both in ACC_DTYPE instead."""
    if UPCAST_OPERANDS:
        a = grad_z
        b = b.to(ACC_DTYPE)
    else:
        a = grad_z.to(b.dtype)
    return tl.dot(a, b, acc, input_precision=INPUT_PRECISION, out_dtype=ACC_DTYPE)
