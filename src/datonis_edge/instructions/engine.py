"""The instruction engine: verify, store, execute once, acknowledge until the platform has it.

`sink` is what the uplink hands each instruction to (thing_key of the topic, exact bytes).
It verifies the signature (a mismatch is dropped: logged once per cause at WARNING, alerted,
never executed), refuses a thing we do not manage, stores the instruction durably and
returns: only then does the transport acknowledge the message to its broker. A worker then
executes instructions one at a time, in arrival order: plan (the thing's rule), check every
value (nothing is written if one does not fit or a device does not answer within the rule's
`device_wait_ms`), write in order, record the result; each result is acknowledged to the
platform (`uplink.instruction_ack`), retried with backoff until it is DELIVERED.

A write typed in the console (`write_now`) takes the same turn: it waits for the instruction
being executed and an instruction waits for it, so two writes never run side by side on an
adapter; it is planned and checked the same way, but neither stored nor acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from pathlib import Path
from typing import Any

from ..adapters.base import Adapter, WriteFailed
from ..backoff import Backoff
from ..logs import OnceLogger
from ..model import OutcomeKind
from ..protocol.instructions import InstructionError, verify_instruction
from ..status import Alerts, PartStatus
from ..uplinks.base import Uplink
from .plan import Mapping, NoRule, Plan
from .store import INTERRUPTED, InstructionStore, Record

log = logging.getLogger(__name__)

ACK_BACKOFF_S = (0.5, 30.0)  # first and longest wait between two tries of an ack


def _plain(secret: Any) -> str:
    return secret.get_secret_value() if hasattr(secret, "get_secret_value") else str(secret)


class InstructionEngine:
    def __init__(
        self,
        root: Path,
        access_key: Any,
        secret_key: Any,
        thing_keys: list[str],
        adapters: list[Adapter],
        uplink: Uplink,
        alerts: Alerts,
    ) -> None:
        self.store = InstructionStore(root)
        self.access_key, self.secret_key = _plain(access_key), _plain(secret_key)
        self.thing_keys = set(thing_keys)
        self.mapping = Mapping(adapters)
        self.uplink = uplink
        self.alerts = alerts
        self.status = PartStatus(name="instructions", type="instructions")
        self.status.state = "ready"
        self.queue: asyncio.Queue[Record] = asyncio.Queue()
        # one write at a time: a platform instruction or a console write, never both
        self._turn = asyncio.Lock()
        self._acks: set[asyncio.Task[None]] = set()
        self._recovered: list[Record] = []  # what open() found, taken over once by run()
        self._once = OnceLogger(log)
        for name in ("received", "executed", "failed", "rejected", "acknowledged"):
            self.status.counters[name] = 0

    # ------------------------------------------------------------------ arrival

    def open(self) -> list[Record]:
        """Load DIR/instructions/ (blocking; run in a thread): what a previous master left."""
        records = self.store.open()
        self._recovered = list(records)
        self._update_pending()
        return records

    async def sink(self, thing_key: str, payload: bytes) -> None:
        """The uplink's InstructionSink. Returns once the instruction is stored (or dropped);
        raises only if it could not be stored (the broker then offers it again)."""
        try:
            verified = verify_instruction(payload, self.access_key, self.secret_key)
            if verified["thing_key"] != thing_key:
                raise InstructionError(
                    "wrong_thing",
                    f"the instruction names thing {verified['thing_key']!r} but came on the "
                    f"topic of {thing_key!r}",
                )
            if thing_key not in self.thing_keys:
                raise InstructionError(
                    "unknown_thing", f"thing {thing_key!r} is not configured on this gateway"
                )
        except InstructionError as exc:
            self._reject(thing_key, exc)
            return
        alert_key = verified["alert_key"]
        seen = self.store.known(alert_key)
        if seen is not None:
            self.status.count("duplicates")
            if seen == "executed":  # the platform missed our ack: say it again
                entry = self.store.executed[alert_key]
                record = Record(
                    alert_key, thing_key, verified["timestamp"], verified["instruction"], 0,
                    "executed", entry.get("success"), entry.get("message"),
                )  # fmt: skip
                self._ack_soon(record, store=False)
            return
        record = Record(
            alert_key,
            thing_key,
            verified["timestamp"],
            verified["instruction"],
            int(time.time() * 1000),
        )
        await asyncio.to_thread(self.store.add, record)
        self.status.count("received")
        self._update_pending()
        self.queue.put_nowait(record)

    def _reject(self, thing_key: str, exc: InstructionError) -> None:
        self.status.count("rejected")
        self.status.counters[f"rejected_{exc.cause}"] = (
            self.status.counters.get(f"rejected_{exc.cause}", 0) + 1
        )
        self.status.error(f"an instruction for {thing_key} was dropped: {exc}", announce=False)
        if self._once.log(
            f"reject:{exc.cause}",
            "instruction for thing %s dropped, never executed: %s",
            thing_key,
            exc,
        ):
            self.alerts.raise_("warning", f"instruction dropped, never executed: {exc}", thing_key)

    # ------------------------------------------------------------------ execution

    async def run(self) -> None:
        """Take over what a previous master left, then execute arrivals one at a time."""
        recovered, self._recovered = self._recovered, []
        for record in recovered:
            if record.state == "received":
                self.queue.put_nowait(record)
            elif record.state == "executing":
                log.warning(
                    "instruction %s for %s was being executed when the last master stopped; "
                    "it is not repeated (at most once) and is acknowledged as failed",
                    record.alert_key,
                    record.thing_key,
                )
                await asyncio.to_thread(self.store.executed_as, record, False, INTERRUPTED)
                self.status.count("failed")
                self._ack_soon(record)
            else:
                self._ack_soon(record)
        self.status.ok("running")
        while True:
            record = await self.queue.get()
            if record.state == "received" and record.alert_key in self.store.pending:
                async with self._turn:
                    await self.execute(record)

    async def execute(self, record: Record) -> None:
        success, message = await self._carry_out(record)
        await asyncio.to_thread(self.store.executed_as, record, success, message)
        self.status.count("executed" if success else "failed")
        if success:
            log.info("instruction %s for %s: %s", record.alert_key, record.thing_key, message)
        else:
            self.status.error(f"instruction {record.alert_key}: {message}", announce=False)
            if self._once.log(
                f"failed:{record.thing_key}:{message.split(':', 1)[0]}",
                "instruction %s for %s failed: %s",
                record.alert_key,
                record.thing_key,
                message,
            ):
                self.alerts.raise_("warning", f"instruction failed: {message}", record.thing_key)
        self._ack_soon(record)

    async def _carry_out(self, record: Record) -> tuple[bool, str]:
        checked = await self._checked_plan(
            record.thing_key, record.instruction, f"instruction {record.alert_key}"
        )
        if isinstance(checked, str):
            return False, checked
        await asyncio.to_thread(self.store.executing, record)
        return await self._write(checked)

    async def write_now(self, thing_key: str, instruction: dict[str, Any]) -> tuple[bool, str]:
        """A write typed in the console, in its turn (see the module docstring): planned by
        the thing's rules, every value checked, then written; not stored, not acknowledged
        (nobody on the platform waits for it). (success, what was done)."""
        async with self._turn:
            self.status.count("console_writes")
            checked = await self._checked_plan(thing_key, instruction, "a console write")
            if isinstance(checked, str):
                return False, checked
            return await self._write(checked)

    async def _checked_plan(
        self, thing_key: str, instruction: dict[str, Any], what: str
    ) -> Plan | str:
        """The thing's plan with every value checked, or why nothing may be written."""
        try:
            plan = self.mapping.plan(thing_key, instruction)
        except NoRule as exc:
            return str(exc)
        try:
            await self.mapping.check(plan)
        except WriteFailed as exc:  # a value that does not fit (ValueRefused), a device down
            return f"{plan.rule.name}: nothing written: {exc.reason}"
        except Exception as exc:  # a bug or a library's surprise: fail this one, not the engine
            log.exception("%s: checking its values failed", what)
            return f"{plan.rule.name}: nothing written: {_error(exc)}"
        return plan

    @staticmethod
    async def _write(plan: Plan) -> tuple[bool, str]:
        done: list[str] = []
        for i, write in enumerate(plan.writes):
            try:
                await write.adapter.write(write.tag, write.checked)
            except Exception as exc:  # WriteFailed, or a surprise: the same answer either way
                reason = exc.reason if isinstance(exc, WriteFailed) else _error(exc)
                left = [w.tag for w in plan.writes[i + 1 :]]
                parts = [f"wrote {', '.join(done)}" if done else "nothing written"]
                parts.append(f"{write.tag} failed: {reason}")
                if left:
                    parts.append(f"not written: {', '.join(left)}")
                return False, f"{plan.rule.name}: " + "; ".join(parts)
            done.append(f"{write.tag}={_show(write.value)}")
        return True, f"{plan.rule.name}: wrote {', '.join(done)}"

    # ------------------------------------------------------------------ acknowledgement

    def _ack_soon(self, record: Record, store: bool = True) -> None:
        task = asyncio.get_running_loop().create_task(self._ack(record, store))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _ack(self, record: Record, store: bool) -> None:
        """Tell the platform until it has it (at least once); then forget the file. Trouble
        with acks is one line for all of them (one cause), and one when they go through."""
        backoff = Backoff(*ACK_BACKOFF_S)
        while True:
            outcome = await self.uplink.instruction_ack(
                record.alert_key, record.thing_key, bool(record.success), record.message or ""
            )
            if outcome.kind is OutcomeKind.DELIVERED:
                self._once.resolve(
                    "ack", "acknowledgements of instructions reach the platform again"
                )
                break
            if outcome.kind is OutcomeKind.DECLINED:
                self._once.log(
                    "ack_declined",
                    "the platform refused the acknowledgement of instruction %s (%s); a refused "
                    "acknowledgement is not sent again",
                    record.alert_key,
                    outcome.reason,
                )
                self.status.count("ack_declined")
                break
            delay = backoff.next()
            self._once.log(
                "ack",
                "acknowledgements of instructions do not reach the platform (%s); retrying with "
                "backoff, %d waiting; they are kept in instructions/pending/",
                outcome.reason,
                len(self._acks),
            )
            await asyncio.sleep(delay)
        if store:
            await asyncio.to_thread(self.store.acknowledged, record)
            self.status.count("acknowledged")
            self._update_pending()

    def _update_pending(self) -> None:
        self.status.details["pending"] = len(self.store.pending)

    def abort(self) -> None:
        """Mastership lost: nothing more leaves this process."""
        for task in list(self._acks):
            task.cancel()

    async def close(self) -> None:
        """Stop acknowledging; what is not acknowledged stays in DIR/instructions/."""
        for task in list(self._acks):
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*self._acks, return_exceptions=True)

    async def wait_acknowledged(self) -> None:
        """Until every ack in flight is through (tests, benchmarks)."""
        while self._acks:
            await asyncio.gather(*list(self._acks), return_exceptions=True)


def _error(exc: BaseException) -> str:
    return f"unexpected error: {exc.__class__.__name__}: {exc}"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)
