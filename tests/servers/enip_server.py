"""A Logix PLC for the tests: cpppo's EtherNet/IP server (`python -m cpppo.server.enip`) with
two additions a test needs: it counts the CIP requests it answers (SendRRData and
SendUnitData encapsulations; a Multiple Service Packet is one) into `--count-file`, and it
stops at once on SIGTERM (cpppo's own server does not).

    python tests/servers/enip_server.py --count-file F --address 127.0.0.1:PORT TAG=TYPE[N] ...
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Any

from cpppo.server.enip import logix
from cpppo.server.enip.main import main as enip_main

_REQUESTS = (0x6F, 0x70)  # SendRRData (unconnected), SendUnitData (connected)


def main() -> int:
    args = sys.argv[1:]
    count_file: Path | None = None
    if "--count-file" in args:
        i = args.index("--count-file")
        count_file = Path(args[i + 1])
        del args[i : i + 2]
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    answered = 0

    def counting(addr: Any, data: Any, **kwds: Any) -> Any:
        nonlocal answered
        result = logix.process(addr, data, **kwds)
        try:
            command = data.request.enip.command
        except (AttributeError, KeyError):
            command = None
        if command in _REQUESTS and count_file is not None:
            answered += 1
            tmp = count_file.with_suffix(".tmp")
            tmp.write_text(str(answered))
            tmp.replace(count_file)
        return result

    return enip_main(args, enip_process=counting)


if __name__ == "__main__":
    sys.exit(main())
