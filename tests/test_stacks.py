"""N-D stacks (ssdn.data.stacks): axes, round trips with OME metadata, lazy reading, iteration, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from ssdn.data import stacks as st
from ssdn.errors import UserError

SHAPES = {"YX": (5, 7), "ZYX": (3, 5, 7), "TYX": (4, 5, 7), "CYX": (2, 5, 7), "TZCYX": (2, 3, 2, 5, 7)}


def _data(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.random.default_rng(seed).integers(0, int(info.max) + 1, size=shape, dtype=dtype)


@pytest.mark.parametrize("axes", ["yx", "CYX", "ZYX", "TYX", "TZCYX", "ZTYX"])
def test_check_axes_accepts(axes):
    assert st.check_axes(axes) == axes.upper()


@pytest.mark.parametrize("axes", ["XY", "ZYXC", "ZZYX", "QYX", "Z", ""])
def test_check_axes_rejects_naming_setting_and_letters(axes):
    with pytest.raises(UserError, match=r"data\.axes=.*TZCYX"):
        st.check_axes(axes)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("axes", list(SHAPES))
def test_round_trip_values_axes_dtype_physical_sizes(tmp_path, axes, dtype):
    data = _data(SHAPES[axes], dtype)
    sizes = {"X": (0.1625, "µm"), "Y": (0.1625, "µm")}
    if "Z" in axes:
        sizes["Z"] = (0.5, "µm")
    names = ("GFP", "RFP") if "C" in axes else None
    meta = st.StackMeta(axes, np.dtype(dtype), sizes, names)
    path = st.write_stack(tmp_path / "a.ome.tif", data, meta)
    for reader in (st.read_stack, st.open_stack):
        back = reader(path, axes)
        assert back.axes == axes and back.dtype == dtype and back.shape == data.shape
        np.testing.assert_array_equal(back.read(), data)
        assert dict(back.meta.physical_sizes) == sizes
        assert back.meta.channel_names == names
    # the file names its axes: without data.axes the axes longer than 1 come back in order
    assert st.read_stack(path).axes == axes
    # written again through the plane writer: the same bytes of pixels and metadata
    again = st.write_stack(tmp_path / "b.ome.tif", iter(data.reshape(-1, *data.shape[-2:])), meta, data.shape)
    back = st.read_stack(again, axes)
    np.testing.assert_array_equal(back.read(), data)
    assert back.meta == st.read_stack(path, axes).meta


def test_singleton_axes_kept_when_declared(tmp_path):
    data = _data((1, 3, 1, 5, 7), np.uint16)
    path = st.write_stack(tmp_path / "a.ome.tif", data, st.StackMeta("TZCYX", np.dtype(np.uint16)))
    assert st.read_stack(path).axes == "ZYX"
    back = st.read_stack(path, "TZCYX")
    assert back.shape == data.shape
    np.testing.assert_array_equal(back.read(), data)
    np.testing.assert_array_equal(st.take_plane(back, {"T": 0, "Z": 2}), data[0, 2])
    with pytest.raises(IndexError, match=r"T=1 outside 0\.\.0"):
        back.take({"T": 1})
    with pytest.raises(UserError, match=r"a\.ome\.tif.*'ZYX'.*data\.axes='TYX'.*no Z"):
        st.read_stack(path, "TYX")


def test_plain_multipage_tiff_needs_declared_axes_matching_ndim(tmp_path):
    data = _data((4, 5, 7), np.uint16)
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, data, photometric="minisblack", metadata=None)
    with pytest.raises(UserError, match=r"plain\.tif.*does not name its axes.*data\.axes"):
        st.read_stack(path)
    with pytest.raises(UserError, match=r"plain\.tif: data\.axes='TZYX' names 4 axes.*3 dimensions"):
        st.read_stack(path, "TZYX")
    back = st.read_stack(path, "ZYX")
    assert back.axes == "ZYX"
    np.testing.assert_array_equal(back.read(), data)


def test_imagej_hyperstack_axes_and_physical_sizes(tmp_path):
    """Fiji's TIFFs: axes from the ImageJ description, sizes from the resolution tags, spacing and finterval."""
    data = _data((3, 2, 8, 8), np.uint16)
    path = tmp_path / "fiji.tif"
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(1 / 0.1625, 1 / 0.1625),
        metadata={"spacing": 0.5, "unit": "micron", "axes": "ZCYX", "finterval": 2.0},
    )
    stack = st.read_stack(path)
    assert stack.axes == "ZCYX"
    np.testing.assert_array_equal(stack.read(), data)
    sizes = stack.meta.physical_sizes
    assert sizes["Z"] == (0.5, "µm") and sizes["X"][1] == sizes["Y"][1] == "µm"
    assert sizes["X"][0] == pytest.approx(0.1625, rel=1e-3) and "T" not in sizes  # no T axis: not kept
    out = st.write_stack(tmp_path / "out.ome.tif", stack.read(), stack.meta)
    assert st.read_stack(out).meta == stack.meta


def test_float_stack_refused(tmp_path):
    path = tmp_path / "f.tif"
    tifffile.imwrite(
        path, np.zeros((2, 4, 4), np.float32), photometric="minisblack", metadata={"axes": "ZYX"}
    )
    with pytest.raises(UserError, match=r"f\.tif: float32 pixels"):
        st.read_stack(path)
    assert st.read_stack(path, counts=False).dtype == np.float32  # clean references, uncertainty stacks


def test_iter_planes_channels_kept_or_independent(tmp_path):
    data = _data((2, 3, 2, 5, 7), np.uint16)  # TZCYX
    stack = st.read_stack(st.write_stack(tmp_path / "s.ome.tif", data, st.StackMeta("TZCYX", data.dtype)))
    kept = list(st.iter_planes(stack))
    assert [i for i, _ in kept] == [{"T": t, "Z": z} for t in range(2) for z in range(3)]
    for i, plane in kept:
        assert plane.shape == (2, 5, 7)
        np.testing.assert_array_equal(plane, data[i["T"], i["Z"]])
    independent = list(st.iter_planes(stack, channels_independent=True))
    assert len(independent) == 12
    for i, plane in independent:
        assert plane.shape == (1, 5, 7)
        np.testing.assert_array_equal(plane[0], data[i["T"], i["Z"], i["C"]])
    volumes = list(st.iter_volumes(stack))
    assert [i for i, _ in volumes] == [{"T": 0}, {"T": 1}]
    np.testing.assert_array_equal(volumes[1][1], data[1].transpose(1, 0, 2, 3))  # (C, Z, Y, X)
    vols = list(st.iter_volumes(stack, channels_independent=True))
    assert len(vols) == 4 and vols[3][1].shape == (1, 3, 5, 7)
    np.testing.assert_array_equal(vols[3][1][0], data[1, :, 1])
    flat = st.read_stack(
        st.write_stack(tmp_path / "t.ome.tif", data[:, 0, 0], st.StackMeta("TYX", data.dtype))
    )
    with pytest.raises(UserError, match="no Z"):
        st.volume_indices(flat)


def test_open_stack_reads_planes_without_loading_whole(tmp_path):
    data = _data((16, 64, 64), np.uint16)
    path = st.write_stack(tmp_path / "big.ome.tif", data, st.StackMeta("ZYX", data.dtype))
    stack = st.open_stack(path, "ZYX")
    reads = []
    real_open = open

    def counting_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if str(file) == str(path):
            real_read = handle.read
            handle.read = lambda n=-1: reads.append(n) or real_read(n)
        return handle

    import builtins

    builtins_open, builtins.open = builtins.open, counting_open
    try:
        plane = st.take_plane(stack, {"Z": 9})
        block = stack.source[(slice(3, 5), slice(None), slice(None))]
    finally:
        builtins.open = builtins_open
    assert reads == [64 * 64 * 2] * 3  # one plane, then two: never the whole stack
    np.testing.assert_array_equal(plane[0], data[9])
    np.testing.assert_array_equal(block, data[3:5])
    np.testing.assert_array_equal(stack.take({"Y": 5}), data[:, 5])  # a row through every plane


def test_open_stack_compressed_is_read_by_chunk(tmp_path):
    zarr = pytest.importorskip("zarr", reason="the zarr extra reads compressed TIFFs by chunk")
    data = _data((8, 32, 32), np.uint8)
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, data, compression="zlib", photometric="minisblack", metadata={"axes": "ZYX"})
    stack = st.open_stack(path)
    assert isinstance(stack.source, zarr.Array)
    np.testing.assert_array_equal(st.take_plane(stack, {"Z": 5})[0], data[5])


def test_ome_zarr_level0_axes_and_scale(tmp_path):
    zarr = pytest.importorskip("zarr", reason="OME-Zarr is an optional extra (ssdn[zarr])")
    data = _data((2, 4, 6, 8), np.uint16)  # CZYX
    root = zarr.open_group(str(tmp_path / "img.zarr"), mode="w", zarr_format=2)
    root.create_array("0", data=data)
    root.create_array("1", data=data[:, :, ::2, ::2])
    root.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [{"name": "c", "type": "channel"}]
            + [{"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"],
            "datasets": [
                {"path": "0", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.1, 0.1]}]},
                {"path": "1", "coordinateTransformations": [{"type": "scale", "scale": [1, 0.5, 0.2, 0.2]}]},
            ],
        }
    ]
    root.attrs["omero"] = {"channels": [{"label": "DAPI"}, {"label": "GFP"}]}
    stack = st.open_stack(tmp_path / "img.zarr")
    assert stack.axes == "CZYX" and stack.shape == data.shape
    assert stack.meta.physical_sizes == {
        "Z": (0.5, "micrometer"),
        "Y": (0.1, "micrometer"),
        "X": (0.1, "micrometer"),
    }
    assert stack.meta.channel_names == ("DAPI", "GFP")
    np.testing.assert_array_equal(st.take_plane(stack, {"Z": 3}), data[:, 3])
    # the same stack written as OME-TIFF keeps the axes and sizes
    out = st.write_stack(tmp_path / "img.ome.tif", stack.read(), stack.meta)
    assert st.read_stack(out).meta == st.StackMeta(
        "CZYX", np.dtype(np.uint16), stack.meta.physical_sizes, ("DAPI", "GFP")
    )


def test_collection_bit_depth_refuses_mixed(tmp_path):
    a = st.write_stack(
        tmp_path / "a.ome.tif", _data((2, 4, 4), np.uint8), st.StackMeta("ZYX", np.dtype(np.uint8))
    )
    b = st.write_stack(
        tmp_path / "b.ome.tif", _data((2, 4, 4), np.uint16), st.StackMeta("ZYX", np.dtype(np.uint16))
    )
    assert st.collection_bit_depth([st.open_stack(a), st.open_stack(a)]) == 8
    with pytest.raises(UserError, match=r"a\.ome\.tif is 8-bit.*b\.ome\.tif is 16-bit"):
        st.collection_bit_depth([st.open_stack(a), st.open_stack(b)])


def test_write_refuses_existing_and_leaves_nothing_on_failure(tmp_path):
    meta = st.StackMeta("ZYX", np.dtype(np.uint16))
    target = tmp_path / "out.ome.tif"
    target.write_bytes(b"user's file")
    with pytest.raises(UserError, match="already exists"):
        st.write_stack(target, np.zeros((2, 4, 4), np.uint16), meta)
    assert target.read_bytes() == b"user's file"

    def failing_planes():
        yield np.zeros((4, 4), np.uint16)
        raise RuntimeError("denoiser crashed")

    fresh = tmp_path / "fresh.ome.tif"
    with pytest.raises(RuntimeError, match="crashed"):
        st.write_stack(fresh, failing_planes(), meta, shape=(3, 4, 4))
    with pytest.raises(ValueError, match="2 planes given"):
        st.write_stack(fresh, iter(np.zeros((2, 4, 4), np.uint16)), meta, shape=(3, 4, 4))
    with (
        pytest.raises(RuntimeError, match="crashed"),
        st.StackWriter(target, (3, 4, 4), meta, overwrite=True) as w,
    ):
        w.write(0, np.full((4, 4), 7, np.uint16))
        raise RuntimeError("denoiser crashed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.ome.tif"]
    assert target.read_bytes() == b"user's file"


def test_stack_writer_tiles_and_uncertainty_beside(tmp_path):
    data = _data((3, 8, 10), np.uint16)
    meta = st.StackMeta("ZYX", np.dtype(np.uint16), {"X": (0.2, "µm"), "Y": (0.2, "µm"), "Z": (0.6, "µm")})
    out = tmp_path / "den.ome.tif"
    with st.StackWriter(out, data.shape, meta, release_bytes=100) as w:  # released after each tile
        for y0 in (0, 4):  # tile by tile through every Z
            w.write((slice(None), slice(y0, y0 + 4)), data[:, y0 : y0 + 4])
    back = st.read_stack(out, "ZYX")
    np.testing.assert_array_equal(back.read(), data)
    assert back.meta == meta
    std = np.random.default_rng(1).random(data.shape, dtype=np.float32)
    std_path = st.sibling_path(out, "std")
    assert std_path.name == "den.std.ome.tif"
    st.write_stack(std_path, iter(std), meta.as_float32(), std.shape)
    with tifffile.TiffFile(std_path) as tif:
        assert tif.series[0].axes == "ZYX" and tif.series[0].dtype == np.float32
        np.testing.assert_array_equal(tif.series[0].asarray(), std)
