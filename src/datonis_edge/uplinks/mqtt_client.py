"""The paho client setup both MQTT uplinks (datonis_mqtt, mqtt_broker) share.

paho reconnects on its own network thread. While the broker is unreachable it tries every
REACHABILITY_PROBE_S, then every RECONNECT_EVERY_S (capped by the cloud's
retry_max_backoff_ms): a reconnect attempt is one TCP connect, cheap, and events are delivered
again within a second of the broker's return. A broker that answers and refuses the CONNECT
is not hammered: from then on paho's delay doubles from 1 s up to the cap (`back_off`), until
the connection is accepted (`quick_reconnects` again). Nothing is queued in paho: a publish
without a connection fails at once, the outbox keeps the events.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ..backoff import REACHABILITY_PROBE_S

CLOSE_WAIT_S = 1.0  # paho's network thread is a daemon: a stop does not wait longer for it
RECONNECT_EVERY_S = 1.0  # a reconnect to an unreachable broker: one TCP connect, cheap


def new_client(client_id: str, max_backoff_s: float, **options: Any) -> mqtt.Client:
    """A clean-session paho client (MQTT 3.1.1 unless `options` say otherwise) that keeps
    up to 1000 QoS>0 messages in flight and queues none while disconnected."""
    options.setdefault("protocol", mqtt.MQTTv311)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=True,
        **options,
    )
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    quick_reconnects(client, max_backoff_s)
    return client


def quick_reconnects(client: mqtt.Client, max_backoff_s: float) -> None:
    """Reconnect soon after the broker is reachable again."""
    every = min(RECONNECT_EVERY_S, max_backoff_s)
    client.reconnect_delay_set(min_delay=min(REACHABILITY_PROBE_S, every), max_delay=every)


def back_off(client: mqtt.Client, max_backoff_s: float) -> None:
    """The broker refused the CONNECT: paho's delay doubles from 1 s up to the cap."""
    client.reconnect_delay_set(min_delay=1, max_delay=max(1.0, max_backoff_s))


async def stop(client: mqtt.Client, thread_name: str) -> None:
    """Disconnect and stop paho's network thread. loop_stop() joins that thread, which may
    sit in a reconnect wait or a connect(): it is joined off the event loop, for at most
    CLOSE_WAIT_S (it is a daemon thread)."""
    client.disconnect()
    stopper = threading.Thread(target=client.loop_stop, name=thread_name, daemon=True)
    stopper.start()
    deadline = time.monotonic() + CLOSE_WAIT_S
    while stopper.is_alive() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
