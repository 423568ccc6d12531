"""Read tensors out of a *whole pickled module* (``torch.save(model)``) without running its code.

Official ScaleProtoSeg checkpoints are pickles of the training code's ``nn.Module`` objects.
``torch.load(weights_only=False)`` would import that code (and run arbitrary code hidden in
the file); ``weights_only=True`` refuses the file. This module reads such a file itself:

* The torch zip container (``<archive>/data.pkl`` + ``<archive>/data/<key>`` storages +
  ``<archive>/byteorder``) is opened with Python's :mod:`zipfile`; storages are read by the
  persistent ids the pickle refers to (``('storage', StorageType, key, location, numel)``,
  see ``torch/serialization.py::_save``). Every storage is created on the CPU whatever its
  saved location (official files hold CUDA tensors).
* :class:`RestrictedUnpickler.find_class` resolves only

  - tensor rebuild functions (our own re-implementations of ``torch._utils._rebuild_tensor``,
    ``_rebuild_tensor_v2/v3``, ``_rebuild_parameter(_with_state)`` and
    ``torch._tensor._rebuild_from_type_v2``, which check their arguments and drop any
    Python attribute state),
  - ``collections.OrderedDict``, a few inert builtins (``set``, ``frozenset``, ``complex``,
    ``_codecs.encode`` for bytes), ``torch.Size``, ``torch.device``,
    torch dtypes and the storage type names;

  every module in :data:`REFUSED_MODULES` (``os``, ``subprocess``, ``builtins`` beyond the
  names above, ...) raises :class:`~fssgui.errors.CheckpointError`; *any other* global
  (the official classes, ``torch.nn`` modules, numpy, Lightning, ...) becomes an inert
  :class:`Placeholder` subclass that is never imported. Creating a placeholder (``NEWOBJ``,
  ``REDUCE``, ``INST``/``OBJ``) only records the arguments; ``BUILD`` only records the state.
  So nothing in the pickle is executed.
* :func:`module_state_dict` walks the placeholders' recorded ``_parameters``, ``_buffers``
  and ``_modules`` (the state ``nn.Module.__getstate__`` pickles) and builds dotted keys
  the way ``nn.Module.state_dict()`` does (non-persistent buffers excluded).
"""
from __future__ import annotations

import _compat_pickle
import io
import pickle
import pickletools
import sys
import zipfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from ..errors import CheckpointError

# ------------------------------------------------------------------------------- placeholders


class Placeholder:
    """Inert stand-in for an object of a class that the pickle names but we never import.

    ``global_name`` (class attribute) is ``"module.QualName"`` of the original class;
    ``call_args``/``call_kwargs`` hold the arguments it was "called" with and ``state`` the
    state that ``BUILD`` would have applied (for ``nn.Module`` that is its ``__dict__``).
    """

    global_name: str = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> "Placeholder":
        obj = object.__new__(cls)
        obj.call_args = args
        obj.call_kwargs = kwargs
        obj.state = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # never runs foreign code
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<placeholder {self.global_name}>"

    @property
    def attributes(self) -> dict:
        """The recorded ``__dict__`` (the first element when the state is ``(dict, slots)``)."""
        state = self.state
        if isinstance(state, tuple) and len(state) == 2 and isinstance(state[0], dict):
            state = state[0]
        return state if isinstance(state, dict) else {}


def _placeholder_class(module: str, name: str) -> type:
    return type(name.rsplit(".", 1)[-1], (Placeholder,), {"global_name": f"{module}.{name}", "__module__": __name__})


# ---------------------------------------------------------------------- whitelisted callables


class _StorageType:
    """What a storage class name (``torch.FloatStorage``) resolves to: only its dtype."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name = name
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


_STORAGE_DTYPES = {
    "DoubleStorage": torch.float64,
    "FloatStorage": torch.float32,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64,
    "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}

_DTYPES = {
    name: getattr(torch, name)
    for name in (
        "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
        "bool", "complex64", "complex128", "double", "float", "half", "long", "int", "short",
    )
}


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise CheckpointError(f"malformed tensor record in the pickle ({what})")


def _int_tuple(value: Any) -> tuple[int, ...]:
    _check(isinstance(value, (tuple, list, torch.Size)), "size/stride is not a tuple")
    _check(all(isinstance(v, int) for v in value), "size/stride holds non-integers")
    return tuple(int(v) for v in value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """Checked re-implementation of ``torch._utils._rebuild_tensor(_v2)``: a CPU tensor view of
    a storage we read ourselves; ``requires_grad``, hooks and metadata are ignored."""
    _check(isinstance(storage, torch.storage.TypedStorage), "storage is not a storage")
    _check(isinstance(storage_offset, int) and storage_offset >= 0, "bad storage offset")
    size, stride = _int_tuple(size), _int_tuple(stride)
    _check(len(size) == len(stride), "size and stride differ in length")
    tensor = torch.empty((0,), dtype=storage.dtype)
    try:
        return tensor.set_(storage._untyped_storage, storage_offset, size, stride)
    except RuntimeError as exc:  # out-of-bounds view
        raise CheckpointError(f"malformed tensor record in the pickle ({exc})") from None


def _rebuild_tensor_v3(
    storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any, hooks: Any, dtype: Any, *_: Any
) -> torch.Tensor:
    _check(isinstance(dtype, torch.dtype), "dtype is not a torch dtype")
    _check(isinstance(storage, torch.storage.TypedStorage), "storage is not a storage")
    typed = torch.storage.TypedStorage(wrap_storage=storage._untyped_storage, dtype=dtype, _internal=True)
    return _rebuild_tensor(typed, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.nn.Parameter:
    """``_rebuild_parameter(data, requires_grad, hooks[, state])`` without hooks or state."""
    _check(isinstance(data, torch.Tensor), "parameter data is not a tensor")
    return torch.nn.Parameter(data, requires_grad=False)


def _rebuild_from_type_v2(func: Any, new_type: Any, args: Any, state: Any) -> Any:
    """``torch._tensor._rebuild_from_type_v2`` restricted to plain tensors and parameters;
    ``func`` must be one of the rebuild functions above (Python attribute state is dropped)."""
    _check(func in _REBUILD_FUNCTIONS, "tensor rebuilt by a function that is not a tensor rebuild")
    _check(new_type in (_TENSOR_TYPE, _PARAMETER_TYPE), "tensor subclass")
    _check(isinstance(args, tuple), "rebuild arguments are not a tuple")
    result = func(*args)
    if new_type is _PARAMETER_TYPE and not isinstance(result, torch.nn.Parameter):
        result = torch.nn.Parameter(result, requires_grad=False)
    return result


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (protocol 0/1 objects) for placeholder classes only."""
    if isinstance(cls, type) and issubclass(cls, Placeholder):
        obj = cls.__new__(cls)
        return obj
    raise CheckpointError(f"the pickle reconstructs {cls!r} with copyreg: refused")


class _TypeMarker:
    """What ``torch.Tensor``/``nn.Parameter`` resolve to: a name, deliberately not callable."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<type {self.name}>"


_TENSOR_TYPE = _TypeMarker("torch.Tensor")
_PARAMETER_TYPE = _TypeMarker("torch.nn.Parameter")

_REBUILD_FUNCTIONS = {_rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter}

_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("_codecs", "encode"): __import__("_codecs").encode,  # how protocol 2 pickles bytes
    ("copyreg", "_reconstructor"): _reconstructor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    ("torch", "Tensor"): _TENSOR_TYPE,
    ("torch._tensor", "Tensor"): _TENSOR_TYPE,
    ("torch.nn.parameter", "Parameter"): _PARAMETER_TYPE,
}

#: top-level modules a model checkpoint never needs; naming any of them refuses the file
REFUSED_MODULES = frozenset(
    {
        "os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__", "shutil", "socket",
        "importlib", "runpy", "pickle", "_pickle", "marshal", "ctypes", "code", "codeop", "pty",
        "webbrowser", "io", "_io", "pathlib", "tempfile", "multiprocessing", "threading", "signal",
        "types", "operator", "asyncio", "urllib", "http", "requests", "pip", "setuptools", "site",
        "platform", "glob", "zipfile", "tarfile", "shelve", "dbm", "sqlite3", "inspect", "gc",
        "pdb", "timeit", "trace", "cProfile", "profile", "commands", "popen2", "nturl2path",
        "posixpath", "ntpath", "fcntl", "resource", "mmap", "select", "selectors", "ssl", "smtplib",
        "ftplib", "telnetlib", "xmlrpc", "email", "logging", "atexit", "ensurepip", "venv", "torch.hub",
    }
)


def _refused(module: str) -> bool:
    parts = module.split(".")
    return any(".".join(parts[: i + 1]) in REFUSED_MODULES for i in range(len(parts)))


# ----------------------------------------------------------------------------------- unpickler


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that never imports or calls anything outside a short whitelist (see module doc).

    ``storage_reader(key, nbytes) -> bytes`` supplies the raw bytes of storage ``key`` for
    torch's persistent ids; ``byteswap`` says whether stored bytes need swapping.
    """

    def __init__(self, file: io.BufferedIOBase, storage_reader=None, byteswap: bool = False, source: str = "") -> None:
        super().__init__(file)
        self._storage_reader = storage_reader
        self._byteswap = byteswap
        self._storages: dict[str, torch.storage.TypedStorage] = {}
        self._placeholder_classes: dict[str, type] = {}
        self.source = source
        #: every global the pickle named, as "module.name", with how it was resolved
        self.globals_seen: dict[str, str] = {}

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        # Python 2 names used by protocol <= 2 pickles (what pickle's own find_class maps)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        key = f"{module}.{name}"
        if (module, name) in _ALLOWED:
            self.globals_seen[key] = "allowed"
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            self.globals_seen[key] = "storage type"
            return _StorageType(name, _STORAGE_DTYPES[name])
        if module == "torch" and name in _DTYPES:
            self.globals_seen[key] = "dtype"
            return _DTYPES[name]
        if _refused(module):
            raise CheckpointError(
                f"{self.source or 'checkpoint'}: the pickle refers to {key}, which a model checkpoint "
                "never needs; refusing to load it (the file may be malicious)"
            )
        self.globals_seen[key] = "placeholder"
        if key not in self._placeholder_classes:
            self._placeholder_classes[key] = _placeholder_class(module, name)
        return self._placeholder_classes[key]

    def persistent_load(self, saved_id: Any) -> Any:  # noqa: D401 - pickle API
        if not (isinstance(saved_id, tuple) and len(saved_id) >= 5):
            raise CheckpointError(f"{self.source}: unknown persistent id in the pickle")
        typename = saved_id[0].decode("ascii") if isinstance(saved_id[0], bytes) else saved_id[0]
        if typename != "storage":
            raise CheckpointError(f"{self.source}: unknown persistent id type {typename!r} in the pickle")
        storage_type, key, _location, numel = saved_id[1:5]
        if isinstance(storage_type, _StorageType):
            dtype = storage_type.dtype
        elif storage_type is torch.UntypedStorage:
            dtype = torch.uint8
        else:
            raise CheckpointError(f"{self.source}: persistent id names no storage type ({storage_type!r})")
        if not isinstance(key, str) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"{self.source}: malformed storage id {saved_id[:5]!r}")
        if self._storage_reader is None:
            raise CheckpointError(f"{self.source}: the pickle refers to tensor storages but has none")
        if key not in self._storages:
            nbytes = numel * torch.empty((), dtype=dtype).element_size()
            raw = self._storage_reader(key, nbytes)
            untyped = torch.UntypedStorage.from_buffer(bytearray(raw), dtype=torch.uint8) if nbytes else torch.UntypedStorage(0)
            if self._byteswap and nbytes:
                untyped.byteswap(dtype)
            self._storages[key] = torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)
        storage = self._storages[key]
        if storage.dtype != dtype:
            storage = torch.storage.TypedStorage(wrap_storage=storage._untyped_storage, dtype=dtype, _internal=True)
        return storage


# ------------------------------------------------------------------------------- file reading


@dataclass
class PickledModule:
    """What :func:`load_pickled_module` extracts from a whole-module pickle."""

    path: Path
    root: Any  # the unpickled root object (a Placeholder for a module; anything else otherwise)
    state_dict: "OrderedDict[str, torch.Tensor]"
    module_classes: dict[str, str]  # dotted module name ("" = root) -> original class path
    globals_seen: dict[str, str] = field(default_factory=dict)

    @property
    def class_path(self) -> str:
        return self.module_classes.get("", type(self.root).__name__)

    def attributes(self, module: str = "") -> dict[str, Any]:
        """Plain attributes (not parameters/buffers/submodules) of a (sub)module, e.g.
        ``attributes()["prototype_class_identity"]`` or ``attributes("features")["scales"]``."""
        obj = self.root
        for part in [p for p in module.split(".") if p]:
            obj = dict(_named_items(obj.attributes.get("_modules"))).get(part) if isinstance(obj, Placeholder) else None
            if obj is None:
                return {}
        if not isinstance(obj, Placeholder):
            return {}
        return {k: v for k, v in obj.attributes.items() if isinstance(k, str) and not k.startswith("_")}


def _zip_records(archive: zipfile.ZipFile, path: Path) -> tuple[str, dict[str, zipfile.ZipInfo]]:
    """Find ``<prefix>/data.pkl`` in a torch zip checkpoint; return the prefix and the records."""
    infos = {info.filename: info for info in archive.infolist()}
    pickles = [name for name in infos if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        if any(name.endswith("constants.pkl") for name in infos):
            raise CheckpointError(f"{path}: a TorchScript archive, not a torch.save checkpoint")
        raise CheckpointError(f"{path}: not a torch checkpoint (no single '<name>/data.pkl' record in the zip)")
    return pickles[0][: -len("data.pkl")], infos


_MEMO_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"})


def check_opcodes(data: bytes, path: Path) -> None:
    """Walk the pickle's opcodes without running anything (:func:`pickletools.genops`) and refuse
    a damaged or hostile one before the unpickler sees it: an opcode whose length runs past the end
    of the data (the C unpickler would allocate that length first: gigabytes from a flipped byte)
    and a memo index beyond what the data could hold (it would grow its memo table to that index)."""
    try:
        for opcode, arg, position in pickletools.genops(data):
            if opcode.name in _MEMO_OPCODES and not (isinstance(arg, int) and 0 <= arg <= len(data)):
                raise CheckpointError(f"{path}: damaged pickle (memo index {arg!r} at byte {position})")
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - pickletools raises ValueError and others on damage
        detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{path}: damaged pickle ({detail})") from None


def unpickle_checkpoint(path: str | Path) -> tuple[Any, dict[str, str]]:
    """Restricted-unpickle a torch zip checkpoint. Returns ``(object, globals_seen)``.

    Tensors come back as CPU tensors; unknown classes as :class:`Placeholder` instances.
    Raises :class:`CheckpointError` for refused globals or a malformed/unsupported file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: file not found")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a zip-format torch checkpoint (files from torch < 1.6 or raw pickles are not supported; "
            "re-save it with torch.save in a recent torch)"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            prefix, infos = _zip_records(archive, path)
            byteorder = b"little"
            if prefix + "byteorder" in infos:
                byteorder = archive.read(prefix + "byteorder")
                if byteorder not in (b"little", b"big"):
                    raise CheckpointError(f"{path}: unknown byte order {byteorder!r}")

            def read_storage(key: str, nbytes: int) -> bytes:
                name = f"{prefix}data/{key}"
                if name not in infos:
                    raise CheckpointError(f"{path}: the pickle refers to storage {key!r}, which the file lacks")
                data = archive.read(name)
                if len(data) < nbytes:
                    raise CheckpointError(f"{path}: storage {key!r} is truncated ({len(data)} < {nbytes} bytes)")
                return data[:nbytes]

            data = archive.read(prefix + "data.pkl")
            check_opcodes(data, path)
            unpickler = RestrictedUnpickler(
                io.BytesIO(data),
                storage_reader=read_storage,
                byteswap=byteorder.decode() != sys.byteorder,
                source=str(path),
            )
            try:
                obj = unpickler.load()
            except CheckpointError as exc:  # the tensor checks do not know the file: name it
                if str(exc).startswith(str(path)):
                    raise
                raise CheckpointError(f"{path}: {exc}") from None
            except Exception as exc:  # noqa: BLE001 - hostile opcodes raise anything (MemoryError for a huge frame...)
                detail = str(exc).splitlines()[0][:200] if str(exc) else ""
                raise CheckpointError(f"{path}: cannot read the pickle safely ({type(exc).__name__}"
                                      + (f": {detail})" if detail else ")")) from None
            return obj, unpickler.globals_seen
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path}: damaged zip archive ({exc})") from None


def _named_items(mapping: Any) -> list[tuple[str, Any]]:
    """The (name, value) entries of a recorded ``_parameters``/``_buffers``/``_modules`` dict;
    anything else (a damaged or hostile pickle) has none."""
    if not isinstance(mapping, dict):
        return []
    return [(k, v) for k, v in mapping.items() if isinstance(k, str)]


def module_state_dict(root: Any) -> tuple["OrderedDict[str, torch.Tensor]", dict[str, str]]:
    """State dict of a placeholder module tree, keyed like ``nn.Module.state_dict()``.

    A ``DataParallel``-style wrapper (a root whose only submodule is ``module``) is unwrapped.
    Returns ``(state_dict, module_classes)``.
    """
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    classes: dict[str, str] = {}
    seen: set[int] = set()

    def walk(obj: Any, prefix: str) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        classes[prefix[:-1]] = obj.global_name
        attrs = obj.attributes
        params = attrs.get("_parameters") or {}
        buffers = attrs.get("_buffers") or {}
        non_persistent = attrs.get("_non_persistent_buffers_set")
        non_persistent = non_persistent if isinstance(non_persistent, (set, frozenset)) else set()
        modules = attrs.get("_modules") or {}
        for name, value in _named_items(params):
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach()
        for name, value in _named_items(buffers):
            if isinstance(value, torch.Tensor) and name not in non_persistent:
                out[prefix + name] = value.detach()
        for name, value in _named_items(modules):
            if isinstance(value, Placeholder):
                walk(value, prefix + name + ".")

    if not isinstance(root, Placeholder):
        raise CheckpointError("the pickle's root object is not a module")
    modules = dict(_named_items(root.attributes.get("_modules")))
    if list(modules) == ["module"] and isinstance(modules["module"], Placeholder) and not root.attributes.get("_parameters"):
        root = modules["module"]  # DataParallel / DistributedDataParallel
    walk(root, "")
    return out, classes


def load_pickled_module(path: str | Path) -> PickledModule:
    """Read a whole-module ``torch.save(model)`` file without importing or running its code."""
    path = Path(path)
    obj, globals_seen = unpickle_checkpoint(path)
    if not isinstance(obj, Placeholder):
        raise CheckpointError(f"{path}: the pickle holds a {type(obj).__name__}, not a pickled module")
    try:
        state_dict, classes = module_state_dict(obj)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except RecursionError:
        raise CheckpointError(f"{path}: the pickled modules are nested too deeply") from None
    modules = dict(_named_items(obj.attributes.get("_modules")))
    if list(modules) == ["module"] and isinstance(modules["module"], Placeholder):
        obj = modules["module"]
    if not state_dict:
        raise CheckpointError(f"{path}: the pickled object ({obj.global_name}) holds no parameters or buffers")
    return PickledModule(path=path, root=obj, state_dict=state_dict, module_classes=classes, globals_seen=globals_seen)


def plain_value(value: Any) -> Optional[Any]:
    """``value`` if it is plain data (numbers, strings, tensors, and containers of them), else None."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value
    if isinstance(value, (list, tuple)):
        items = [plain_value(v) for v in value]
        return None if any(i is None and v is not None for i, v in zip(items, value)) else type(value)(items)
    if isinstance(value, dict):
        items = {k: plain_value(v) for k, v in value.items()}
        return None if any(items[k] is None and value[k] is not None for k in value) else items
    return None
