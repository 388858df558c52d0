"""Model files: what :meth:`momcore.MLP.save` writes and how :meth:`momcore.MLP.load`
reads any file safely.

A model file is a zip archive (numpy's ``.npz``) of three members, each stored
uncompressed: ``params.npy`` and ``state.npy`` (1-D float32/float64 arrays of
``n_params(sizes)`` elements) and ``metadata.npy`` (a 0-d unicode array holding
JSON). A model whose optimizer holds estimates beyond its state buffer is written as
version 2, whose metadata describes them and whose further members hold their arrays
(1-D, of the sizes the metadata implies): ``momentum="auto"``'s tuner
(:data:`TUNER_MEMBERS`) and rule ``"qian"``'s per-weight momenta and curvature
(:data:`PER_WEIGHT_MEMBERS`). Reading checks, before anything large is allocated or read:

- the path is a regular file (a FIFO, a device such as ``/dev/zero`` or a socket is
  refused without reading from it);
- the archive holds those three members and no others but the further members its
  metadata declares, each an ``.npy`` stored without compression or encryption, whose
  bytes lie inside the file;
- the metadata (at most :data:`METADATA_LIMIT` bytes) is JSON of the expected
  schema: names from the registry, non-negative integers, a PCG64 generator state;
- each array's ``.npy`` header (at most :data:`HEADER_LIMIT` bytes) declares the
  dtype and the 1-D shape that the metadata implies (``(n_params(sizes),)`` for the
  weights and the state), and the member holds exactly that many bytes.

So loading allocates no more than the file holds (the arrays are in the file),
never inflates anything, and every malformed file raises :class:`CheckpointError`
(a ValueError) that names the problem. Missing files and permissions raise the
usual OSError.

Writing goes to a temporary file in the target's directory, then ``os.replace``;
the temporary's name carries this machine and process (``.momcore-<host>-<pid>-
<random>.tmp``), so that a later save in that directory removes those of
processes no longer running here (a save killed half-way).
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import secrets
import socket
import stat
import struct
import zipfile
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np

from momcore import _network as layout
from momcore import registry

FORMAT = "momcore.MLP"
FORMAT_VERSION = 1
"""The version of a model file without further members (what momcore 0.1 wrote)."""
EXTENDED_VERSION = 2
"""The version of a model file with an optimizer's estimates in further members."""
MEMBERS = ("params", "state", "metadata")
TUNER_MEMBERS = ("tuner_steps", "tuner_changes", "tuner_gram", "tuner_cross", "tuner_noise",
                 "tuner_grad_avg", "tuner_grad_sq_avg", "tuner_previous_w",
                 "tuner_previous_g")
"""The arrays of a Tuner's state_dict (float64, flattened), as members."""
PER_WEIGHT_MEMBERS = ("momenta", "curvature")
"""Rule "qian"'s per-weight momenta (the model's dtype) and curvature estimate
(float64), as members."""
MAX_WINDOW = 1 << 16
"""The largest tuner window a model file may declare."""
METADATA_LIMIT = 1 << 20
"""Largest metadata member read, in bytes (a real one is well under 1 KiB)."""
HEADER_LIMIT = 10_000
"""Largest .npy header read, in bytes (numpy's own default limit)."""
ARRAY_DTYPES = {"float32": "<f4", "float64": "<f8"}
"""The dtypes of params and state, and their .npy descriptions (little-endian, as
np.save writes them on every platform numpy supports)."""
MAX_COUNT = 2**63 - 1  # steps and epochs
_CHUNK = 1 << 20


class CheckpointError(ValueError):
    """A file that is not a readable momcore model file; the message names the problem."""


# ---- reading ---------------------------------------------------------------------------


class Reader:
    """An open model file whose structure has been checked (see the module docstring).

    ``metadata()`` returns the checked metadata; ``check_array(name, dtype, n)``
    checks a member's .npy header; ``read_into(name, out)`` fills ``out`` from it.
    A context manager: the file is closed on exit."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        # O_NONBLOCK: opening a FIFO for reading must not wait for a writer.
        fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError(21, "Is a directory", self.path)
            if not stat.S_ISREG(st.st_mode):
                raise self.error(f"not a regular file ({_kind(st.st_mode)}); a model file "
                                 f"is a regular file written by MLP.save")
            os.set_blocking(fd, True)
            self.file: BinaryIO = os.fdopen(fd, "rb")
        except BaseException:
            os.close(fd)
            raise
        self.size = st.st_size
        self.zip: zipfile.ZipFile | None = None
        self.headers: dict[str, tuple[str, tuple[int, ...], int]] = {}
        try:
            self._open_archive()
        except BaseException:
            self.close()
            raise

    def error(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {message}")

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
        self.file.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _open_archive(self) -> None:
        try:
            self.zip = zipfile.ZipFile(self.file)
            infos = self.zip.infolist()
        except _ZIP_ERRORS as exc:
            raise self.error(f"corrupt or truncated model file (not a readable zip "
                             f"archive: {type(exc).__name__})") from None
        names = [info.filename for info in infos]
        expected = {f"{m}.npy" for m in MEMBERS + TUNER_MEMBERS + PER_WEIGHT_MEMBERS}
        if len(set(names)) != len(names):
            raise self.error("corrupt model file (a member appears twice)")
        extra = sorted(set(names) - expected)
        if extra:
            raise self.error(f"not a momcore model file (unexpected member "
                             f"{extra[0][:80]!r}; a model file holds "
                             f"{', '.join(f'{m}.npy' for m in MEMBERS)} and the "
                             f"members its metadata declares)")
        missing = sorted(m for m in MEMBERS if f"{m}.npy" not in names)
        if missing:
            raise self.error(f"not a momcore model file (missing {missing})")
        self.infos = {info.filename[:-4]: info for info in infos}
        for name, info in self.infos.items():
            if info.flag_bits & 0x1:
                raise self.error(f"member {name!r} is encrypted; model files are not")
            if info.compress_type != zipfile.ZIP_STORED:
                raise self.error(f"member {name!r} is compressed (zip method "
                                 f"{info.compress_type}); model files are stored "
                                 f"uncompressed, as MLP.save writes them")
            if (info.compress_size != info.file_size
                    or info.header_offset + info.compress_size > self.size):
                raise self.error(f"corrupt or truncated model file (member {name!r} "
                                 f"declares {info.file_size} bytes that the file does "
                                 f"not hold)")

    def _member(self, name: str) -> Any:
        assert self.zip is not None
        try:
            return self.zip.open(self.infos[name])
        except _ZIP_ERRORS as exc:
            raise self.error(f"corrupt or truncated model file (member {name!r}: "
                             f"{type(exc).__name__})") from None

    def _header(self, name: str, member: Any) -> tuple[str, tuple[int, ...], int]:
        """(descr, shape, bytes after the header) of a member's .npy header."""
        magic = _read_exactly(member, 8, self, name)
        if magic[:6] != b"\x93NUMPY":
            raise self.error(f"member {name!r} is not a .npy array")
        major = magic[6]
        if major == 1:
            length = struct.unpack("<H", _read_exactly(member, 2, self, name))[0]
            start = 10
        elif major in (2, 3):
            length = struct.unpack("<I", _read_exactly(member, 4, self, name))[0]
            start = 12
        else:
            raise self.error(f"member {name!r}: .npy format version {major} is not "
                             f"supported")
        if length > HEADER_LIMIT:
            raise self.error(f"member {name!r}: .npy header of {length} bytes (at most "
                             f"{HEADER_LIMIT})")
        text = _read_exactly(member, length, self, name)
        try:
            header = ast.literal_eval(text.decode("utf-8" if major == 3 else "latin1"))
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError,
                UnicodeDecodeError):
            raise self.error(f"member {name!r}: unreadable .npy header") from None
        if (not isinstance(header, dict)
                or set(header) != {"descr", "fortran_order", "shape"}
                or not isinstance(header["descr"], str)
                or not isinstance(header["fortran_order"], bool)
                or not isinstance(header["shape"], tuple)
                or not all(type(d) is int and d >= 0 for d in header["shape"])):
            raise self.error(f"member {name!r}: malformed .npy header")
        if header["descr"].lstrip("|<>=") == "O":
            raise self.error(f"holds object arrays (pickled data) in member {name!r}, "
                             f"which momcore never loads")
        remaining = self.infos[name].file_size - start - length
        return header["descr"], header["shape"], remaining

    def metadata(self) -> dict[str, Any]:
        """The checked metadata (see :func:`check_metadata`)."""
        if self.infos["metadata"].file_size > METADATA_LIMIT:
            raise self.error(f"metadata of {self.infos['metadata'].file_size} bytes "
                             f"(at most {METADATA_LIMIT})")
        with self._member("metadata") as member:
            descr, shape, remaining = self._header("metadata", member)
            match = re.fullmatch(r"<U([0-9]{1,7})", descr)
            if match is None or shape != () or remaining != 4 * int(match.group(1)):
                raise self.error(f"metadata is not a JSON string (a {descr[:20]!r} array "
                                 f"of shape {shape[:4]})")
            raw = _read_exactly(member, remaining, self, "metadata")
            _expect_end(member, self, "metadata")
        try:
            text = str(np.frombuffer(raw, descr)[0])
            meta = json.loads(text)
        except RecursionError:
            raise self.error("corrupt metadata (JSON nested too deeply)") from None
        except (ValueError, UnicodeError) as exc:
            raise self.error(f"corrupt metadata (not JSON: {str(exc)[:80]})") from None
        try:
            meta = check_metadata(meta)
        except (TypeError, ValueError) as exc:
            raise self.error(str(exc)) from None
        declared = set(MEMBERS) | set(declared_members(meta))
        if set(self.infos) != declared:
            odd = sorted(set(self.infos) ^ declared)[0]
            raise self.error(f"mismatched model file (member {odd!r} is "
                             f"{'missing' if odd in declared else 'not declared'} in the "
                             f"metadata)")
        return meta

    def check_array(self, name: str, dtype: str, n: int) -> None:
        """Checks that member ``name`` is a 1-D ``dtype`` array of ``n`` elements,
        from its header alone."""
        with self._member(name) as member:
            descr, shape, remaining = self._header(name, member)
        itemsize = np.dtype(dtype).itemsize
        if descr != ARRAY_DTYPES[dtype] or shape != (n,) or remaining != n * itemsize:
            declared = f"{descr[:20]}{list(shape[:4])}"
            raise self.error(f"mismatched model file ({name} is {declared}, expected "
                             f"{ARRAY_DTYPES[dtype]}[{n}] for the sizes in the metadata)")
        self.headers[name] = (descr, shape, remaining)

    def read_into(self, name: str, out: np.ndarray) -> None:
        """out := the array of member ``name`` (checked by check_array first)."""
        assert name in self.headers and out.nbytes == self.headers[name][2]
        view = memoryview(out.reshape(-1).view(np.uint8))
        with self._member(name) as member:
            self._header(name, member)
            done = 0
            try:
                while done < len(view):
                    got = member.readinto(view[done:done + _CHUNK])
                    if not got:
                        break
                    done += got
            except _ZIP_ERRORS as exc:
                raise self.error(f"corrupt or truncated model file (member {name!r}: "
                                 f"{type(exc).__name__})") from None
            if done != len(view):
                raise self.error(f"corrupt or truncated model file (member {name!r} "
                                 f"ends early)")
            _expect_end(member, self, name)


_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
               KeyError, IndexError, struct.error, UnicodeError, OverflowError,
               NotImplementedError, RuntimeError)


def _read_exactly(member: Any, n: int, reader: Reader, name: str) -> bytes:
    try:
        data = member.read(n)
    except _ZIP_ERRORS as exc:
        raise reader.error(f"corrupt or truncated model file (member {name!r}: "
                           f"{type(exc).__name__})") from None
    if len(data) != n:
        raise reader.error(f"corrupt or truncated model file (member {name!r} ends early)")
    return data


def _expect_end(member: Any, reader: Reader, name: str) -> None:
    """Reads past the member's end, which makes zipfile check its CRC."""
    try:
        extra = member.read(1)
    except _ZIP_ERRORS as exc:
        raise reader.error(f"corrupt or truncated model file (member {name!r}: "
                           f"{type(exc).__name__})") from None
    if extra:
        raise reader.error(f"corrupt model file (member {name!r} is longer than its "
                           f"header says)")


def _kind(mode: int) -> str:
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "a special file"


# ---- metadata ------------------------------------------------------------------------


def _count(value: Any, what: str, limit: int = MAX_COUNT) -> int:
    if type(value) is not int or not 0 <= value <= limit:
        raise ValueError(f"{what} must be an integer in [0, {limit}], got {value!r:.80}")
    return value


def _name(kind: str, value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a name, got {value!r:.80}")
    return registry.check_name(kind, value, what)


def check_metadata(meta: Any) -> dict[str, Any]:
    """``meta`` if it has the schema MLP.save writes (types, names, ranges), else a
    ValueError naming the first problem. Whether the parts fit together (a loss that
    pairs with the output, arrays of the declared sizes) is checked by the caller."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError("not a momcore model file")
    version = meta.get("version")
    if type(version) is not int or version not in (FORMAT_VERSION, EXTENDED_VERSION):
        raise ValueError(f"model file version {version!r:.40} is not supported "
                         f"(this momcore reads versions {FORMAT_VERSION} and "
                         f"{EXTENDED_VERSION})")
    required = ("sizes", "hidden", "output", "dtype", "seed", "backend", "steps", "epochs",
                "rng")
    missing = [key for key in required if key not in meta]
    if missing:
        raise ValueError(f"mismatched model file (the metadata lacks {missing})")
    sizes = meta["sizes"]
    if (not isinstance(sizes, list) or len(sizes) < 2
            or not all(type(s) is int and s >= 1 for s in sizes)):
        raise ValueError(f"mismatched model file (sizes must be a list of at least two "
                         f"positive integers, got {sizes!r:.80})")
    _name("hidden", meta["hidden"], "hidden")
    _name("output", meta["output"], "output")
    if meta.get("loss") is not None:
        _name("loss", meta["loss"], "loss")
    if meta["dtype"] not in ARRAY_DTYPES:
        raise ValueError(f"mismatched model file (dtype must be one of "
                         f"{sorted(ARRAY_DTYPES)}, got {meta['dtype']!r:.40})")
    if meta["backend"] not in ("c", "numpy"):
        raise ValueError(f"mismatched model file (backend must be 'c' or 'numpy', got "
                         f"{meta['backend']!r:.40})")
    _count(meta["seed"], "seed", 2**128 - 1)
    _count(meta["steps"], "steps")
    _count(meta["epochs"], "epochs")
    if meta.get("state_rule") is not None:
        _name("rule", meta["state_rule"], "state_rule")
    check_rng_state(meta["rng"])
    extended = [key for key in ("optimizer", "tuner", "per_weight") if key in meta]
    if version == FORMAT_VERSION and extended:
        raise ValueError(f"mismatched model file (version {FORMAT_VERSION} has no "
                         f"{extended[0]!r})")
    if version == EXTENDED_VERSION:
        _check_extended(meta)
    return meta


def _real(value: Any, what: str, finite: bool = True) -> float:
    """value as a float: a JSON number, finite unless ``finite`` is False (an estimate
    may be NaN or infinite)."""
    if type(value) not in (int, float) or (finite and not math.isfinite(value)):
        raise ValueError(f"mismatched model file ({what} must be a "
                         f"{'finite ' if finite else ''}number, got {value!r:.40})")
    return float(value)


def _fields(value: Any, keys: set[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        raise ValueError(f"mismatched model file ({what} must hold exactly "
                         f"{sorted(keys)})")
    return value


def _check_extended(meta: dict[str, Any]) -> None:
    """The version-2 entries: the hyperparameters in force in the optimizer, and the
    tuner's or the per-weight momenta's settings and numbers (their arrays are members)."""
    if "optimizer" not in meta or ("tuner" in meta) == ("per_weight" in meta):
        raise ValueError("mismatched model file (version 2 holds 'optimizer' and one of "
                         "'tuner' and 'per_weight')")
    optimizer = _fields(meta["optimizer"], {"lr", "momentum", "dampening", "weight_decay"},
                        "optimizer")
    for key, value in optimizer.items():
        _real(value, f"optimizer {key}")
    if "tuner" in meta:
        tuner = _fields(meta["tuner"], {"beta", "window", "floor", "stochastic", "t", "pairs",
                                        "k_min", "k_max", "distance", "variance", "avg",
                                        "count", "previous"}, "tuner")
        for key in ("beta", "floor"):
            _real(tuner[key], f"tuner {key}")
        for key in ("k_min", "k_max", "distance", "variance"):
            _real(tuner[key], f"tuner {key}", finite=False)
        _count(tuner["window"], "tuner window", MAX_WINDOW)
        _count(tuner["t"], "tuner t")
        _count(tuner["pairs"], "tuner pairs")
        for key in ("stochastic", "previous"):
            if type(tuner[key]) is not bool:
                raise ValueError(f"mismatched model file (tuner {key} must be true or false)")
        for key in ("avg", "count"):
            table = tuner[key]
            if not isinstance(table, dict) or len(table) > 16:
                raise ValueError(f"mismatched model file (tuner {key} must be a table of at "
                                 f"most 16 numbers)")
            for name, value in table.items():
                if key == "avg":
                    _real(value, f"tuner avg[{name[:20]!r}]", finite=False)
                else:
                    _count(value, f"tuner count[{name[:20]!r}]")
    else:
        per_weight = _fields(meta["per_weight"], {"decay", "floor", "max_momentum", "every",
                                                  "observations"}, "per_weight")
        for key in ("decay", "floor", "max_momentum"):
            _real(per_weight[key], f"per_weight {key}")
        _count(per_weight["every"], "per_weight every")
        _count(per_weight["observations"], "per_weight observations")


def declared_members(meta: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """The further members checked metadata declares: name -> (dtype, elements)."""
    n = layout.n_params(meta["sizes"])
    if "tuner" in meta:
        window = meta["tuner"]["window"]
        sizes = {"tuner_steps": window * n, "tuner_changes": window * n,
                 "tuner_gram": window * window, "tuner_cross": window * window,
                 "tuner_noise": window, "tuner_grad_avg": n, "tuner_grad_sq_avg": n}
        if meta["tuner"]["previous"]:
            sizes.update(tuner_previous_w=n, tuner_previous_g=n)
        return {name: ("float64", size) for name, size in sizes.items()}
    if "per_weight" in meta:
        return {"momenta": (meta["dtype"], n), "curvature": ("float64", n)}
    return {}


def check_rng_state(state: Any) -> None:
    """A ValueError unless ``state`` is a PCG64 state as numpy's
    ``bit_generator.state`` gives it (the generator of np.random.default_rng)."""
    if (not isinstance(state, Mapping) or state.get("bit_generator") != "PCG64"
            or set(state) != {"bit_generator", "state", "has_uint32", "uinteger"}
            or not isinstance(state["state"], Mapping)
            or set(state["state"]) != {"state", "inc"}):
        raise ValueError("mismatched model file (rng must be the state of a PCG64 "
                         "generator)")
    _count(state["state"]["state"], "rng state", 2**128 - 1)
    _count(state["state"]["inc"], "rng inc", 2**128 - 1)
    _count(state["has_uint32"], "rng has_uint32", 1)
    _count(state["uinteger"], "rng uinteger", 2**32 - 1)


# ---- writing -------------------------------------------------------------------------

_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
_TEMPORARY = re.compile(r"\.momcore-([0-9a-f]{8})-([0-9]+)-[0-9a-f]{16}\.tmp")


def write(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Writes ``arrays`` as an .npz to ``path`` atomically (a temporary file, fsync,
    rename). ``path`` must be a regular file or not exist; an existing file's
    permission bits are kept. Removes temporaries that earlier saves of processes no
    longer running left in the directory."""
    path = os.fspath(path)
    try:
        st: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(21, "MLP.save writes a file; this is a directory", path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: is {_kind(st.st_mode)}; MLP.save writes regular files "
                         f"only and never replaces a special file")
    directory = os.path.dirname(os.path.abspath(path))
    remove_stale_temporaries(directory)
    tmp = os.path.join(directory,
                       f".momcore-{_HOST}-{os.getpid()}-{secrets.token_hex(8)}.tmp")
    # a new file gets the mode a plain open() would give (0o666 less the umask); a
    # replaced file keeps its own
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                 0o666)
    try:
        if st is not None:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def remove_stale_temporaries(directory: str) -> list[str]:
    """Removes the temporaries of saves on this machine whose process is gone; returns
    their names. Others' files and those of running processes are left alone."""
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        match = _TEMPORARY.fullmatch(name)
        if match is None or match.group(1) != _HOST:
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or _running(pid):
            continue
        try:
            os.unlink(os.path.join(directory, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a pid we cannot ask about): keep it
    return True
