"""MLP.load is safe on any file, and MLP.save writes regular files only.

Each test builds a hostile file of one class (issue "Reliability II"): metadata that
declares a huge network, a zip bomb, deep JSON, out-of-range generator state,
encrypted or oddly compressed members, members that are not .npy arrays, absurd
.npy shapes, special files; and the save side: special files refused, permission
bits kept, stale temporaries of killed saves removed. tests/test_fuzz.py fuzzes the
same file format (truncations, byte flips, hostile metadata and headers).
"""
from __future__ import annotations

import io
import json
import os
import stat
import struct
import subprocess
import sys
import textwrap
import tracemalloc
import zipfile

import numpy as np
import pytest

import momcore
from momcore import MLP, _checkpoint

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.realpath(momcore.__file__)))
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(
    filter(None, [PACKAGE_PARENT, os.environ.get("PYTHONPATH")])))

MIB = 1 << 20


def npy(header: str, payload: bytes = b"", version: int = 1) -> bytes:
    """The bytes of a .npy file with the header dict text ``header`` (padded as numpy
    pads it) followed by ``payload``."""
    text = header.encode("latin1")
    prefix = 10 if version == 1 else 12
    text += b" " * (-(prefix + len(text) + 1) % 64) + b"\n"
    size = struct.pack("<H", len(text)) if version == 1 else struct.pack("<I", len(text))
    return b"\x93NUMPY" + bytes([version, 0]) + size + text + payload


def array_npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


def metadata_npy(meta) -> bytes:
    return array_npy(np.array(json.dumps(meta)))


def good_members(sizes=(3, 4, 2)) -> tuple[dict[str, bytes], dict]:
    net = MLP(list(sizes), seed=0)
    meta = net._metadata()
    return {"params.npy": array_npy(net.params), "state.npy": array_npy(net.optimizer_state),
            "metadata.npy": metadata_npy(meta)}, meta


def write_zip(path, members: dict[str, bytes], method=zipfile.ZIP_STORED) -> None:
    with zipfile.ZipFile(path, "w", method) as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def peak_while(fn):
    """(exception raised or None, peak traced bytes) of fn()."""
    tracemalloc.start()
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - returned for the caller's assertions
        return exc, tracemalloc.get_traced_memory()[1]
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return None, peak


def assert_refused(path, match: str, memory: int = 8 * MIB) -> None:
    """MLP.load(path) raises ValueError matching ``match`` and allocates < memory."""
    exc, peak = peak_while(lambda: MLP.load(path))
    assert isinstance(exc, ValueError), f"{type(exc).__name__}: {exc}"
    assert str(path) in str(exc)
    assert match.lower() in str(exc).lower(), str(exc)
    assert peak < memory, f"{peak / MIB:.1f} MiB allocated before the error"


# ---- validate before allocating ---------------------------------------------------------


def test_metadata_declaring_a_huge_network_is_refused_before_allocating(tmp_path):
    # before: the network of sizes [6000, 6000] (550 MiB with its state) was built first
    members, meta = good_members()
    members["metadata.npy"] = metadata_npy(dict(meta, sizes=[6000, 6000]))
    write_zip(tmp_path / "big.npz", members)
    assert_refused(tmp_path / "big.npz", "mismatched")


def test_headers_agreeing_with_huge_sizes_but_missing_bytes_are_refused(tmp_path):
    n = 6000 * 6000 + 6000
    members, meta = good_members()
    members["metadata.npy"] = metadata_npy(dict(meta, sizes=[6000, 6000]))
    header = npy(f"{{'descr': '<f8', 'fortran_order': False, 'shape': ({n},), }}")
    members["params.npy"] = members["state.npy"] = header
    write_zip(tmp_path / "lying.npz", members)
    assert_refused(tmp_path / "lying.npz", "mismatched")


def test_zip_bomb_is_never_inflated(tmp_path):
    # 36M float64 zeros deflate to about 300 KB; the headers all agree with the sizes
    n = 6000 * 6000 + 6000
    members, meta = good_members()
    members["metadata.npy"] = metadata_npy(dict(meta, sizes=[6000, 6000]))
    members["params.npy"] = members["state.npy"] = array_npy(np.zeros(n))
    write_zip(tmp_path / "bomb.npz", members, zipfile.ZIP_DEFLATED)
    assert os.path.getsize(tmp_path / "bomb.npz") < 2 * MIB
    assert_refused(tmp_path / "bomb.npz", "compressed")


@pytest.mark.parametrize("shape", ["(10**12,)", "(1000000000000,)", "(2**70,)",
                                   "(18446744073709551615,)", "(-1,)", "(3, 4)", "()"])
def test_absurd_npy_shapes_are_refused(tmp_path, shape):
    members, _ = good_members()
    members["params.npy"] = npy(f"{{'descr': '<f8', 'fortran_order': False, "
                                f"'shape': {shape}, }}")
    write_zip(tmp_path / "shape.npz", members)
    assert_refused(tmp_path / "shape.npz", "")


# ---- one exception type ---------------------------------------------------------------


def test_deeply_nested_json_metadata(tmp_path):
    members, _ = good_members()
    members["metadata.npy"] = array_npy(np.array("[" * 100_000 + "]" * 100_000))
    write_zip(tmp_path / "deep.npz", members)
    assert_refused(tmp_path / "deep.npz", "nested")


@pytest.mark.parametrize("key, value", [
    ("state", 2**200), ("state", -1), ("inc", 2**128), ("inc", "7"), ("inc", 1.5)])
def test_rng_state_out_of_range(tmp_path, key, value):
    members, meta = good_members()
    rng = meta["rng"]
    rng["state"][key] = value
    members["metadata.npy"] = metadata_npy(meta)
    write_zip(tmp_path / "rng.npz", members)
    assert_refused(tmp_path / "rng.npz", "rng")


@pytest.mark.parametrize("change", [
    {"has_uint32": 2}, {"uinteger": 2**40}, {"bit_generator": "MT19937"}, {"extra": 1}])
def test_rng_state_malformed(tmp_path, change):
    members, meta = good_members()
    meta["rng"].update(change)
    members["metadata.npy"] = metadata_npy(meta)
    write_zip(tmp_path / "rng.npz", members)
    assert_refused(tmp_path / "rng.npz", "rng")


@pytest.mark.parametrize("change, match", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"steps": 2**70}, "steps"),
    ({"epochs": True}, "epochs"), ({"sizes": [3, True, 2]}, "sizes"),
    ({"hidden": ["relu"]}, "hidden"), ({"dtype": "float16"}, "dtype"),
    ({"loss": "hinge"}, "loss"), ({"state_rule": 3}, "state_rule"),
    ({"output": "identity", "loss": "cross_entropy"}, "loss")])
def test_hostile_metadata_values(tmp_path, change, match):
    members, meta = good_members()
    members["metadata.npy"] = metadata_npy(dict(meta, **change))
    write_zip(tmp_path / "meta.npz", members)
    assert_refused(tmp_path / "meta.npz", match)


def _patch_member(raw: bytes, name: str, *, flags: int = 0, method: int | None = None) -> bytes:
    """raw (a zip) with member ``name``'s flag bits or'ed with ``flags`` and its
    compression method set, in both its local and its central directory header."""
    data = bytearray(raw)
    with zipfile.ZipFile(io.BytesIO(raw)) as zf:
        info = zf.getinfo(name)
        start_dir = zf.start_dir
    local = info.header_offset
    central = data.index(b"PK\x01\x02" + data[start_dir + 4:start_dir + 6], start_dir)
    while data[central + 46:central + 46 + len(name)] != name.encode():
        central = data.index(b"PK\x01\x02", central + 4)
    for flag_at, method_at in ((local + 6, local + 8), (central + 8, central + 10)):
        old = struct.unpack_from("<H", data, flag_at)[0]
        struct.pack_into("<H", data, flag_at, old | flags)
        if method is not None:
            struct.pack_into("<H", data, method_at, method)
    return bytes(data)


@pytest.mark.parametrize("flags, method, match", [
    (0x1, None, "encrypted"), (0, 99, "compressed"), (0, zipfile.ZIP_LZMA, "compressed"),
    (0, zipfile.ZIP_BZIP2, "compressed"), (0x20, None, "")])
def test_encrypted_or_unsupported_members(tmp_path, flags, method, match):
    members, _ = good_members()
    write_zip(tmp_path / "good.npz", members)
    raw = _patch_member((tmp_path / "good.npz").read_bytes(), "params.npy", flags=flags,
                        method=method)
    (tmp_path / "patched.npz").write_bytes(raw)
    assert_refused(tmp_path / "patched.npz", match)


@pytest.mark.parametrize("members_change, match", [
    ({"params": b"\x93NUMPY"}, "member"),  # the numpy-less name: not an .npy member
    ({"params.npy": b"not an array at all"}, "not a .npy"),
    ({"params.npy": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (26,), }")},
     "mismatched"),
    ({"params.npy": npy("[1, 2, 3]")}, "malformed"),
    ({"params.npy": npy("{'descr': [('a', '<f8')], 'fortran_order': False, "
                        "'shape': (26,), }")}, "malformed"),
    ({"params.npy": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (26,), "
                        "'x': 1}")}, "malformed"),
    ({"params.npy": npy("(" * 3000 + ")" * 3000)}, "unreadable"),
    ({"params.npy": npy("{'descr': '<f8', " + " " * 20000 + "}")}, "header"),
    ({"metadata.npy": array_npy(np.zeros(3))}, "metadata"),
    ({"metadata.npy": array_npy(np.array(b"{}"))}, "metadata"),
    ({"extra.txt": b"hello"}, "unexpected member"),
])
def test_members_that_are_not_what_they_claim(tmp_path, members_change, match):
    members, _ = good_members()
    members.update(members_change)
    write_zip(tmp_path / "odd.npz", members)
    assert_refused(tmp_path / "odd.npz", match)


def test_member_named_twice(tmp_path):
    members, _ = good_members()
    with warnings_ignored():
        with zipfile.ZipFile(tmp_path / "twice.npz", "w") as zf:
            for name, data in members.items():
                zf.writestr(name, data)
            zf.writestr("params.npy", members["params.npy"])
    assert_refused(tmp_path / "twice.npz", "twice")


def warnings_ignored():
    import warnings
    context = warnings.catch_warnings()
    context.__enter__()
    warnings.simplefilter("ignore")

    class _Exit:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            context.__exit__(*exc)
    return _Exit()


def test_a_flipped_byte_in_the_weights_fails_the_crc(tmp_path):
    members, _ = good_members()
    write_zip(tmp_path / "good.npz", members)
    raw = bytearray((tmp_path / "good.npz").read_bytes())
    with zipfile.ZipFile(tmp_path / "good.npz") as zf:
        info = zf.getinfo("params.npy")
    raw[info.header_offset + 30 + len("params.npy") + 128 + 5] ^= 0x40
    (tmp_path / "flipped.npz").write_bytes(bytes(raw))
    assert_refused(tmp_path / "flipped.npz", "corrupt")


def test_valid_file_still_loads_exactly(tmp_path):
    net = MLP([3, 4, 2], seed=3)
    X = np.random.default_rng(0).normal(size=(20, 3))
    y = np.arange(20) % 2
    net.fit(X, y, epochs=2, batch_size=3)
    net.save(tmp_path / "m.npz")
    loaded = MLP.load(tmp_path / "m.npz")
    assert loaded.params.tobytes() == net.params.tobytes()
    assert loaded.optimizer_state.tobytes() == net.optimizer_state.tobytes()
    assert (loaded.steps, loaded.epochs) == (net.steps, net.epochs)
    assert loaded.rng.bit_generator.state == net.rng.bit_generator.state


# ---- special files ----------------------------------------------------------------------

SPECIAL_LOAD = textwrap.dedent("""\
    import os, sys, momcore
    path = sys.argv[1]
    if sys.argv[2] == "fifo":
        os.mkfifo(path)
    try:
        momcore.MLP.load(path)
    except ValueError as exc:
        print("ValueError:", exc)
""")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "dev-urandom"])
def test_load_from_special_files_does_not_read(tmp_path, kind):
    # before: a FIFO without a writer blocked forever; /dev/zero was read without bound
    path = str(tmp_path / "pipe") if kind == "fifo" else "/dev/" + kind[4:]
    proc = subprocess.run([sys.executable, "-c", SPECIAL_LOAD, path, kind], cwd=tmp_path,
                          env=ENV, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ValueError:" in proc.stdout and "not a regular file" in proc.stdout


def test_load_a_directory_raises_is_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        MLP.load(tmp_path)


# ---- save ---------------------------------------------------------------------------------


def test_save_refuses_a_fifo(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)
    with pytest.raises(ValueError, match="FIFO"):
        MLP([2, 2]).save(path)
    assert stat.S_ISFIFO(os.stat(path).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["pipe"]


@pytest.mark.skipif(os.geteuid() != 0, reason="making a device node needs root")
def test_save_refuses_a_device_node(tmp_path):
    # before: as root, save over a device node replaced it with a regular file
    path = tmp_path / "null"
    os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    with pytest.raises(ValueError, match="character device"):
        MLP([2, 2]).save(path)
    assert stat.S_ISCHR(os.stat(path).st_mode)


def test_save_refuses_a_directory(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError):
        MLP([2, 2]).save(tmp_path / "d")
    assert os.path.isdir(tmp_path / "d") and os.listdir(tmp_path / "d") == []


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_resave_keeps_permission_bits(tmp_path, mode):
    path = tmp_path / "m.npz"
    net = MLP([2, 3, 2])
    net.save(path)
    os.chmod(path, mode)
    net.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode


def test_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        MLP([2, 2]).save(tmp_path / "m.npz")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.npz").st_mode) == 0o640


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_save_removes_stale_temporaries_of_dead_processes(tmp_path):
    host = _checkpoint._HOST
    stale = f".momcore-{host}-{_dead_pid()}-{'ab' * 8}.tmp"
    live = f".momcore-{host}-{os.getppid()}-{'cd' * 8}.tmp"   # a running process
    other_host = f".momcore-{'0' * 8 if host != '0' * 8 else '1' * 8}-{_dead_pid()}-{'ef' * 8}.tmp"
    foreign = ".momcore-notours.tmp"
    for name in (stale, live, other_host, foreign):
        (tmp_path / name).write_bytes(b"PK half a checkpoint")
    MLP([2, 2]).save(tmp_path / "m.npz")
    assert sorted(os.listdir(tmp_path)) == sorted(["m.npz", live, other_host, foreign])


# ---- an optimizer's estimates (version 2) ------------------------------------------------


def _fit_estimating(net, X, y, how):
    if how == "auto":
        net.fit(X, y, epochs=2, batch_size=8, momentum="auto")
    else:
        net.fit(X, y, epochs=2, batch_size=8, rule="qian", lr=0.1, momentum=0.5)


@pytest.mark.parametrize("how", ["auto", "qian"])
@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_load_continues_the_tuner_and_the_per_weight_momenta_exactly(
        tmp_path, how, backend, dtype):
    rng = np.random.default_rng(5)
    X, y = rng.standard_normal((48, 4)), rng.integers(0, 3, 48)
    net = MLP([4, 6, 3], seed=2, backend=backend, dtype=dtype)
    _fit_estimating(net, X, y, how)
    net.save(tmp_path / "m.npz")
    loaded = MLP.load(tmp_path / "m.npz")
    assert (loaded.optimizer.tuner is None) == (how != "auto")
    assert (loaded.optimizer.momenta is None) == (how != "qian")
    assert (loaded.optimizer.lr, loaded.optimizer.momentum) == (net.optimizer.lr,
                                                                net.optimizer.momentum)
    for model in (net, loaded):
        _fit_estimating(model, X, y, how)
    np.testing.assert_array_equal(loaded.params, net.params)
    np.testing.assert_array_equal(loaded.optimizer_state, net.optimizer_state)
    assert loaded.steps == net.steps and loaded.history_.loss == net.history_.loss
    if how == "auto":
        mine, theirs = net.optimizer.tuner.state_dict(), loaded.optimizer.tuner.state_dict()
        assert mine["t"] == theirs["t"] > 0
        np.testing.assert_array_equal(mine["_steps"], theirs["_steps"])
    else:
        assert loaded.optimizer.curvature_observations == net.optimizer.curvature_observations
        np.testing.assert_array_equal(loaded.optimizer.momenta[0], net.optimizer.momenta[0])


def test_a_plain_model_is_still_written_as_version_1_with_three_members(tmp_path):
    net = MLP([3, 4, 2], seed=0)
    net.fit(np.zeros((4, 3)), np.array([0, 1, 0, 1]), epochs=1)
    net.save(tmp_path / "m.npz")
    with zipfile.ZipFile(tmp_path / "m.npz") as zf:
        assert sorted(zf.namelist()) == ["metadata.npy", "params.npy", "state.npy"]
    with _checkpoint.Reader(tmp_path / "m.npz") as reader:
        assert reader.metadata()["version"] == 1


def _estimating_members(tmp_path, how="auto"):
    """The members and metadata of a version-2 file, as MLP.save writes them."""
    rng = np.random.default_rng(5)
    net = MLP([3, 4, 2], seed=0)
    _fit_estimating(net, rng.standard_normal((16, 3)), rng.integers(0, 2, 16), how)
    net.save(tmp_path / "good.npz")
    with zipfile.ZipFile(tmp_path / "good.npz") as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    meta = json.loads(str(np.load(io.BytesIO(members["metadata.npy"]))))
    return members, meta


@pytest.mark.parametrize("how", ["auto", "qian"])
def test_version_2_members_must_be_those_the_metadata_declares(tmp_path, how):
    members, meta = _estimating_members(tmp_path, how)
    assert meta["version"] == 2
    name = "tuner_steps.npy" if how == "auto" else "curvature.npy"
    missing = dict(members)
    del missing[name]
    write_zip(tmp_path / "missing.npz", missing)
    assert_refused(tmp_path / "missing.npz", "is missing in the metadata")
    undeclared = dict(members)
    del undeclared["metadata.npy"]
    write_zip(tmp_path / "undeclared.npz", {**undeclared, "metadata.npy": metadata_npy(
        {k: v for k, v in meta.items() if k not in ("tuner", "per_weight", "optimizer")})})
    assert_refused(tmp_path / "undeclared.npz", "version 2 holds")
    plain = {k: v for k, v in meta.items() if k not in ("tuner", "per_weight", "optimizer")}
    write_zip(tmp_path / "v1.npz", {**members, "metadata.npy": metadata_npy(
        dict(plain, version=1))})
    assert_refused(tmp_path / "v1.npz", "not declared")
    write_zip(tmp_path / "v1-tuner.npz", {**members, "metadata.npy": metadata_npy(
        dict(meta, version=1))})
    assert_refused(tmp_path / "v1-tuner.npz", "version 1 has no")


@pytest.mark.parametrize("change,match", [
    ({"window": 3}, "mismatched model file (tuner_steps is"),
    ({"window": 10**9}, "tuner window must be an integer"),
    ({"beta": 1.5}, "beta must lie in [0, 1)"),
    ({"beta": "0.9"}, "tuner beta must be a finite number"),
    ({"stochastic": 1}, "tuner stochastic must be true or false"),
    ({"t": -1}, "tuner t must be an integer"),
    ({"avg": {str(i): 0.0 for i in range(17)}}, "at most 16 numbers"),
    ({"count": {"k": 1.5}}, "tuner count['k'] must be an integer"),
    ({"previous": False}, "not declared in the metadata"),
    ({"extra": 1}, "tuner must hold exactly"),
])
def test_hostile_tuner_metadata_is_refused(tmp_path, change, match):
    members, meta = _estimating_members(tmp_path, "auto")
    assert meta["tuner"]["previous"] and meta["tuner"]["window"] == 10
    meta["tuner"].update(change)
    write_zip(tmp_path / "bad.npz", {**members, "metadata.npy": metadata_npy(meta)})
    assert_refused(tmp_path / "bad.npz", match)


@pytest.mark.parametrize("change,match", [
    ({"optimizer": {"lr": float("inf"), "momentum": 0.5, "dampening": 0.0,
                    "weight_decay": 0.0}}, "optimizer lr must be a finite number"),
    ({"optimizer": {"lr": 0.1, "momentum": 1.0, "dampening": 0.0,
                    "weight_decay": 0.0}}, "momentum must lie in (-1, 1)"),
    ({"per_weight": {"decay": 0.9, "floor": 1e-3, "max_momentum": 0.99, "every": 0,
                     "observations": 1}}, "every must be an integer >= 1"),
    ({"tuner": {}}, "one of 'tuner' and 'per_weight'"),
    ({"dtype": "float32"}, "mismatched model file (params is"),
])
def test_hostile_per_weight_metadata_is_refused(tmp_path, change, match):
    members, meta = _estimating_members(tmp_path, "qian")
    meta.update(change)
    write_zip(tmp_path / "bad.npz", {**members, "metadata.npy": metadata_npy(meta)})
    assert_refused(tmp_path / "bad.npz", match)
