"""Convert musicnn's ``MSD_musicnn`` TensorFlow 1 checkpoint into ``musicnn_msd.safetensors``.

A development tool (not shipped to the Hub): it reads the checkpoint straight out of the
``musicnn==0.1.0`` wheel without TensorFlow, maps the TF variable names and layouts onto
:class:`frontend.MusiCNN`'s state dict and writes it as safetensors with the ISC notice in the
metadata. Usage::

    .venv/bin/pip download -q --no-deps musicnn==0.1.0 -d .cache/wheels
    python convert_musicnn.py [--wheel PATH_OR_DIR] [--out musicnn_msd.safetensors]

The checkpoint format
---------------------
A TF1 checkpoint ``PREFIX.index`` + ``PREFIX.data-00000-of-00001`` (the wheel's prefix is empty,
hence the dotfiles ``MSD_musicnn/.index``). The ``.index`` file is a TF table (LevelDB's SSTable):

* a 48-byte footer: the BlockHandles (varint offset, varint size) of the meta-index and index
  blocks, zero padding, and the magic number ``0xdb4775248b80fb57`` (little-endian uint64);
* blocks of prefix-compressed entries (varint shared, varint non-shared, varint value length,
  key suffix, value), then a uint32 restart array and its uint32 count; each block is followed
  by a 5-byte trailer (compression type, masked CRC32C);
* the index block maps the last key of each data block to that block's BlockHandle;
* in the data blocks the key is the tensor name and the value a ``BundleEntryProto``
  (1: dtype, 2: TensorShapeProto, 3: shard id, 4: offset, 5: size, 6: crc32c, 7: slices);
  the empty key holds the ``BundleHeaderProto``.

The data file is the tensors' raw bytes, little-endian float32 here, at each entry's offset.
Every tensor's CRC32C is checked against its entry.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

HERE = Path(__file__).resolve().parent
WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_DIR = HERE / ".cache" / "wheels"
PIP_COMMAND = ".venv/bin/pip download -q --no-deps musicnn==0.1.0 -d .cache/wheels"
#: The checkpoint's place inside the wheel (its prefix is empty: the files are dotfiles).
CHECKPOINT_PREFIX = "musicnn/MSD_musicnn/"
LICENSE_SOURCE = "musicnn-0.1.0.dist-info/LICENSE.md"

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_SIZE = 48
BLOCK_TRAILER_SIZE = 5

#: tensorflow/core/framework/types.proto DataType values this reader understands.
TF_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f8"), 3: np.dtype("<i4"), 9: np.dtype("<i8")}


class CheckpointError(ValueError):
    """The bytes are not the TF checkpoint this reader expects."""


# --------------------------------------------------------------------------------------------
# Protobuf wire format and CRC32C, by hand
# --------------------------------------------------------------------------------------------


def _varint(buf: bytes, pos: int) -> Tuple[int, int]:
    """Decode one base-128 varint at ``buf[pos]``; return (value, position after it)."""
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise CheckpointError(f"truncated varint at byte {pos} of a {len(buf)}-byte buffer")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CheckpointError(f"varint longer than 10 bytes ending at byte {pos}")


def _proto_fields(buf: bytes) -> Iterator[Tuple[int, int, object]]:
    """Yield (field number, wire type, value) for each field of a serialised protobuf message.

    Varints come back as int, fixed32/fixed64 as int, length-delimited fields as bytes.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = bytes(buf[pos:pos + length]), pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise CheckpointError(f"unsupported protobuf wire type {wire} for field {field}")
        yield field, wire, value


def _crc32c_table() -> np.ndarray:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table[i] = crc
    return table


_CRC_TABLE = _crc32c_table().tolist()


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli) of ``data``, as TF's ``crc32c::Value``."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TF's masked CRC (``crc32c::Mask``): rotate right by 15 bits and add a constant."""
    crc = crc32c(data)
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------------------------
# The TF table (.index) and the tensors
# --------------------------------------------------------------------------------------------


def _block_handle(buf: bytes, pos: int) -> Tuple[Tuple[int, int], int]:
    offset, pos = _varint(buf, pos)
    size, pos = _varint(buf, pos)
    return (offset, size), pos


def _read_block(table: bytes, handle: Tuple[int, int]) -> List[Tuple[bytes, bytes]]:
    """Entries (key, value) of the block at ``handle``, prefix compression undone."""
    offset, size = handle
    if offset + size + BLOCK_TRAILER_SIZE > len(table):
        raise CheckpointError(f"block at {offset}+{size} runs past the {len(table)}-byte index file")
    compression = table[offset + size]
    if compression != 0:
        raise CheckpointError(f"block at {offset} uses compression type {compression}; only 0 (none) is supported")
    block = table[offset:offset + size]
    n_restarts = struct.unpack_from("<I", block, size - 4)[0]
    end = size - 4 - 4 * n_restarts  # the entries stop where the restart array starts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        non_shared, pos = _varint(block, pos)
        value_len, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + non_shared]
        pos += non_shared
        entries.append((bytes(key), bytes(block[pos:pos + value_len])))
        pos += value_len
    return entries


def read_table(table: bytes) -> Dict[str, bytes]:
    """All key/value pairs of a TF table (SSTable) file, keys decoded as UTF-8."""
    if len(table) < FOOTER_SIZE:
        raise CheckpointError(f"index file of {len(table)} bytes is shorter than the {FOOTER_SIZE}-byte footer")
    footer = table[-FOOTER_SIZE:]
    magic = struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0]
    if magic != TABLE_MAGIC:
        raise CheckpointError(f"index file magic is {magic:#x}, expected {TABLE_MAGIC:#x} (a TF table)")
    _, pos = _block_handle(footer, 0)  # meta-index handle: TF writes an empty one
    index_handle, _ = _block_handle(footer, pos)
    out = {}
    for _, handle_bytes in _read_block(table, index_handle):
        handle, _ = _block_handle(handle_bytes, 0)
        for key, value in _read_block(table, handle):
            out[key.decode("utf-8")] = value
    return out


def _parse_entry(name: str, value: bytes) -> dict:
    """A BundleEntryProto as a dict: dtype, shape, shard_id, offset, size, crc32c."""
    entry = {"dtype": 0, "shape": [], "shard_id": 0, "offset": 0, "size": 0, "crc32c": None}
    for field, _, v in _proto_fields(value):
        if field == 1:
            entry["dtype"] = v
        elif field == 2:
            for f, _, dim in _proto_fields(v):
                if f == 2:  # TensorShapeProto.dim
                    entry["shape"].append(next((s for g, _, s in _proto_fields(dim) if g == 1), 0))
                elif f == 3 and dim:
                    raise CheckpointError(f"tensor {name!r} has unknown rank")
        elif field == 3:
            entry["shard_id"] = v
        elif field == 4:
            entry["offset"] = v
        elif field == 5:
            entry["size"] = v
        elif field == 6:
            entry["crc32c"] = v
        elif field == 7:
            raise CheckpointError(f"tensor {name!r} is stored in slices; this reader handles whole tensors only")
    return entry


def read_checkpoint(index: bytes, data: bytes, names: Optional[List[str]] = None) -> Dict[str, np.ndarray]:
    """Tensors of a single-shard TF checkpoint, given the bytes of its ``.index`` and data files.

    Parameters
    ----------
    index, data : bytes
        Contents of ``PREFIX.index`` and ``PREFIX.data-00000-of-00001``.
    names : list of str, optional
        Read only these tensors (all when None); the others' bytes are not touched or checked.

    Returns
    -------
    dict of str to np.ndarray
        Name -> tensor in its TF layout and dtype (native byte order).
    """
    entries = read_table(index)
    # The empty key holds the BundleHeaderProto (1: num_shards, 2: endianness, 0 = little).
    header = {field: v for field, _, v in _proto_fields(entries.pop("", b""))}
    if header.get(1, 1) != 1 or header.get(2, 0) != 0:
        raise CheckpointError(f"checkpoint has {header.get(1, 1)} shards and endianness {header.get(2, 0)}; "
                              f"this reader handles one little-endian shard")
    if names is not None:
        missing = sorted(set(names) - set(entries))
        if missing:
            raise CheckpointError(f"checkpoint lacks {missing}; it holds {sorted(entries)}")
        entries = {k: entries[k] for k in names}
    tensors = {}
    for name, value in entries.items():
        e = _parse_entry(name, value)
        if e["shard_id"] != 0:
            raise CheckpointError(f"tensor {name!r} is in shard {e['shard_id']}; expected one shard (0)")
        if e["dtype"] not in TF_DTYPES:
            raise CheckpointError(f"tensor {name!r} has TF dtype {e['dtype']}; supported: {sorted(TF_DTYPES)}")
        dtype = TF_DTYPES[e["dtype"]]
        expected = int(np.prod(e["shape"], dtype=np.int64)) * dtype.itemsize
        if e["size"] != expected or e["offset"] + e["size"] > len(data):
            raise CheckpointError(f"tensor {name!r}: {e['size']} bytes at {e['offset']} for shape {e['shape']} "
                                  f"(expected {expected} bytes within a {len(data)}-byte data file)")
        raw = data[e["offset"]:e["offset"] + e["size"]]
        if e["crc32c"] is not None and masked_crc32c(raw) != e["crc32c"]:
            raise CheckpointError(f"tensor {name!r} fails its CRC32C check: the data file is corrupt")
        tensors[name] = np.frombuffer(raw, dtype=dtype).reshape(e["shape"]).astype(dtype.newbyteorder("="))
    return tensors


def checkpoint_names(index: bytes) -> List[str]:
    """Tensor names in a checkpoint's ``.index`` (the bundle header left out), sorted."""
    return sorted(k for k in read_table(index) if k != "")


# --------------------------------------------------------------------------------------------
# TF names -> MusiCNN state dict
# --------------------------------------------------------------------------------------------

#: TF layer scope (in graph-building order, see musicnn's models.py) -> MusiCNN module path.
#: Convolutions: conv2d (timbral 7x38), conv2d_1 (timbral 7x67), conv2d_2..4 (temporal 128, 64,
#: 32), conv2d_5..7 (mid-end); batch norms follow the same order with the input one first.
CONV_MAP = {
    "conv2d": "timbral_74.conv", "conv2d_1": "timbral_77.conv",
    "conv2d_2": "temporal_128.conv", "conv2d_3": "temporal_64.conv", "conv2d_4": "temporal_32.conv",
    "conv2d_5": "midend1.conv", "conv2d_6": "midend2.conv", "conv2d_7": "midend3.conv",
}
BN_MAP = {
    "batch_normalization": "input_bn",
    "batch_normalization_1": "timbral_74.bn", "batch_normalization_2": "timbral_77.bn",
    "batch_normalization_3": "temporal_128.bn", "batch_normalization_4": "temporal_64.bn",
    "batch_normalization_5": "temporal_32.bn",
    "batch_normalization_6": "midend1.bn", "batch_normalization_7": "midend2.bn",
    "batch_normalization_8": "midend3.bn",
    "batch_normalization_9": "pool_bn", "batch_normalization_10": "penultimate_bn",
}
DENSE_MAP = {"dense": "penultimate", "dense_1": "tags"}
BN_PARAMS = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var"}
#: Adam's bias-correction scalars; the per-variable Adam slots end in /Adam or /Adam_1.
OPTIMIZER_SCALARS = {"beta1_power", "beta2_power"}


def is_model_tensor(name: str) -> bool:
    """True for the network's own variables, False for the optimiser's state."""
    return name not in OPTIMIZER_SCALARS and not name.endswith(("/Adam", "/Adam_1"))


def tf_to_torch(tf_tensors: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Map the checkpoint's model tensors to MusiCNN's state dict.

    Layouts: a TF conv kernel is [kh, kw, in, out] and a PyTorch Conv2d weight [out, in, kh, kw];
    the mid-end kernels span the full width with one input channel, so they become Conv1d weights
    [out, width, kh]; a dense kernel is [in, out] and a Linear weight [out, in]. The back end's
    batch norm keeps its TF feature order (max and mean pools interleaved), as does MusiCNN.
    Adam slots (``.../Adam``, ``.../Adam_1``) and the optimiser's scalars are ignored; the
    variables sit at the top level (musicnn's ``tf.name_scope('model')`` does not prefix them).
    """
    out: Dict[str, np.ndarray] = {}
    for name, t in tf_tensors.items():
        if not is_model_tensor(name):
            continue
        layer, _, param = name.partition("/")
        if layer in CONV_MAP:
            target = CONV_MAP[layer]
            if param == "kernel":
                if target.startswith("midend"):
                    if t.shape[2] != 1:
                        raise CheckpointError(f"{name}: mid-end kernel {t.shape} should have one input channel")
                    t = t[:, :, 0, :].transpose(2, 1, 0)          # [kh, width, 1, out] -> [out, width, kh]
                else:
                    t = t.transpose(3, 2, 0, 1)                    # [kh, kw, in, out] -> [out, in, kh, kw]
                out[f"{target}.weight"] = t
            elif param == "bias":
                out[f"{target}.bias"] = t
            else:
                raise CheckpointError(f"unexpected convolution tensor {name!r}")
        elif layer in BN_MAP:
            if param not in BN_PARAMS:
                raise CheckpointError(f"unexpected batch-norm tensor {name!r}")
            out[f"{BN_MAP[layer]}.{BN_PARAMS[param]}"] = t
        elif layer in DENSE_MAP:
            out[f"{DENSE_MAP[layer]}.{'weight' if param == 'kernel' else 'bias'}"] = t.T if param == "kernel" else t
        else:
            raise CheckpointError(f"checkpoint tensor {name!r} has no place in MusiCNN")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(out.items())}


# --------------------------------------------------------------------------------------------
# The wheel and the CLI
# --------------------------------------------------------------------------------------------


def find_wheel(path: Optional[os.PathLike] = None) -> Path:
    """The musicnn 0.1.0 wheel: ``path`` itself, the wheel inside directory ``path``, or the default cache."""
    candidate = Path(path) if path is not None else WHEEL_DIR
    if candidate.is_dir():
        candidate = candidate / WHEEL_NAME
    if not candidate.is_file():
        raise FileNotFoundError(f"musicnn wheel not found at {candidate}; fetch it (29 MB, no TensorFlow) with:\n"
                                f"  {PIP_COMMAND}")
    return candidate


def convert_wheel(wheel: os.PathLike) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Read ``MSD_musicnn`` out of the wheel; return (MusiCNN state dict as numpy, safetensors metadata)."""
    with zipfile.ZipFile(wheel) as zf:
        index = zf.read(CHECKPOINT_PREFIX + ".index")
        data = zf.read(CHECKPOINT_PREFIX + ".data-00000-of-00001")
        license_text = zf.read(LICENSE_SOURCE).decode("utf-8").strip()
    wanted = [n for n in checkpoint_names(index) if is_model_tensor(n)]
    state = tf_to_torch(read_checkpoint(index, data, wanted))
    metadata = {
        "format": "pt",
        "model": "MSD_musicnn (musicnn 0.1.0, Pons & Serra 2019), converted to PyTorch by convert_musicnn.py",
        "source": "https://pypi.org/project/musicnn/0.1.0/ (" + CHECKPOINT_PREFIX + ")",
        "license": "ISC",
        "license_text": license_text,
        "tf_tensors": json.dumps(wanted),
    }
    return state, metadata


def safetensors_bytes(state: Dict[str, np.ndarray], metadata: Dict[str, str]) -> bytes:
    """Serialise float32 tensors as safetensors, byte-for-byte reproducibly.

    The safetensors library writes its metadata in hash-map order, which changes from run to run;
    the format is simple enough to write here with sorted keys: an 8-byte little-endian header
    length, the JSON header (space-padded to a multiple of 8 bytes, as the library pads it),
    then the tensors' raw little-endian bytes in header order.
    """
    header: Dict[str, object] = {"__metadata__": dict(sorted(metadata.items()))}
    chunks, offset = [], 0
    for name in sorted(state):
        t = np.ascontiguousarray(state[name], dtype="<f4")
        raw = t.tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(chunks)


def save_atomic(state: Dict[str, np.ndarray], metadata: Dict[str, str], out: os.PathLike) -> Path:
    """Write ``state`` as safetensors to ``out`` atomically (`workbench.atomic_files.write_bytes`)."""
    from workbench.atomic_files import write_bytes

    return write_bytes(out, safetensors_bytes(state, metadata))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel", help=f"the musicnn 0.1.0 wheel or its directory (default: {WHEEL_DIR})")
    parser.add_argument("--out", default=str(HERE / "musicnn_msd.safetensors"), help="output safetensors file")
    args = parser.parse_args(argv)
    try:
        wheel = find_wheel(args.wheel)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 2
    state, metadata = convert_wheel(wheel)
    out = save_atomic(state, metadata, args.out)
    n_params = sum(v.size for v in state.values())
    print(f"wrote {out} ({len(state)} tensors, {n_params:,} values) from {wheel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
