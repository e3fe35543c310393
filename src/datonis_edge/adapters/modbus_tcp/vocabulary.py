"""Modbus vocabulary shared by the config and the adapter: register kinds, data types, word
orders, with the spellings the Datonis gateway uses. Imports nothing of the package."""

from __future__ import annotations

REGISTER_KINDS = {
    "holding": "holding", "holding_register": "holding", "holding_registers": "holding",
    "hr": "holding", "4x": "holding",
    "input": "input", "input_register": "input", "input_registers": "input", "ir": "input",
    "3x": "input",
    "coil": "coil", "coils": "coil", "co": "coil", "0x": "coil",
    "discrete": "discrete", "discrete_input": "discrete", "discrete_inputs": "discrete",
    "di": "discrete", "1x": "discrete",
}  # fmt: skip

DATA_TYPES = {
    "bool": "bool", "boolean": "bool", "bit": "bool",
    "int16": "int16", "int": "int16", "short": "int16",
    "uint16": "uint16", "uint": "uint16", "word": "uint16", "ushort": "uint16",
    "int32": "int32", "long": "int32", "dint": "int32",
    "uint32": "uint32", "dword": "uint32", "udint": "uint32",
    "int64": "int64", "lint": "int64",
    "uint64": "uint64", "ulint": "uint64",
    "float32": "float32", "float": "float32", "real": "float32",
    "float64": "float64", "double": "float64", "lreal": "float64",
    "string": "string", "str": "string",
}  # fmt: skip

REGISTERS_NEEDED = {
    "bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
    "int64": 4, "uint64": 4, "float64": 4,
}  # fmt: skip

ENDIANS = {"abcd": "ABCD", "badc": "BADC", "cdab": "CDAB", "dcba": "DCBA",
           "big": "ABCD", "big_endian": "ABCD", "little": "DCBA", "little_endian": "DCBA"}  # fmt: skip

# the protocol's limits of one read request (Modbus Application Protocol v1.1b3, 6.1 - 6.4)
MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


def normalize(table: dict[str, str], value: str, what: str) -> str:
    key = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in table:
        choices = ", ".join(sorted(set(table.values())))
        raise ValueError(f"'{value}' is not a Modbus {what}; use one of {choices}")
    return table[key]
