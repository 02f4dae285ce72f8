"""A local user abusing keyfed's endpoint (issue 11), run by tests/util/abuse.rs as another uid.

Reads one JSON line on standard input, the spec: "host", "port", "mode" and the mode's keys.
Prints "started" once the abuse is under way, keeps it up until standard input says "stop" (or
ends), then prints one JSON line summing up what it saw and exits. It never prints what the
endpoint answered: only statuses and counts (answers may carry credentials).

Modes:
  requests  workers (`concurrency`) send `requests` ({face, head, expect}) round-robin, each on a
            connection of its own (`keepalive`: false) or on kept-alive connections (true; or
            "mixed": every other worker), and count the statuses; an answer whose status is not
            `expect` is wrong.
  slowloris `count` connections, each sending one of `trickle` ({face, head, body, expect})
            one byte every `interval` seconds: the head when `body` is 0 (it must be cut off
            without an answer), else the whole head at once and then `body` bytes of body (the
            face must answer `expect` without waiting for the body, and close). A connection
            ended is opened again.
  idle      `count` connections opened and left idle; one closed by the server is opened again.
            With `first` ({face, head, expect}), every other connection first sends one of them
            (kept alive) and idles after its answer. A connection closed within `at_once`
            seconds was refused at once (over a cap); a later close is the endpoint's idle cut.

Every mode reports "open_too_long": connections still open at the end although opened more than
`limit` seconds earlier (the endpoint must cut every idle or trickling connection by then).
"""

import asyncio
import json
import sys
import time

SPEC = json.loads(sys.stdin.readline())
HOST, PORT = SPEC["host"], SPEC["port"]
LIMIT = SPEC.get("limit", 30.0)


def status_of(data):
    """The status of an HTTP/1.1 answer, or None when there is none."""
    if not data.startswith(b"HTTP/1.1 "):
        return None
    try:
        return int(data[9:12])
    except ValueError:
        return None


class Tally:
    def __init__(self):
        self.by = {}
        self.wrong = 0
        self.examples = []
        self.open = {}  # id -> opened at
        self.longest = 0.0

    def count(self, key):
        self.by[key] = self.by.get(key, 0) + 1

    def mismatch(self, what):
        self.wrong += 1
        if len(self.examples) < 5:
            self.examples.append(what)

    def opened(self, key):
        self.open[key] = time.monotonic()

    def closed(self, key):
        started = self.open.pop(key, None)
        if started is not None:
            self.longest = max(self.longest, time.monotonic() - started)

    def summary(self, **more):
        now = time.monotonic()
        too_long = sum(1 for t in self.open.values() if now - t > LIMIT)
        return dict(by=self.by, wrong=self.wrong, examples=self.examples,
                    longest_open=round(self.longest, 3), open_too_long=too_long, **more)


async def connect():
    return await asyncio.wait_for(asyncio.open_connection(HOST, PORT), 10)


async def read_all(reader, seconds=10):
    """Everything until the server closes (or `seconds` pass, or the connection resets)."""
    data = b""
    deadline = time.monotonic() + seconds
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            chunk = await asyncio.wait_for(reader.read(65536), left)
            if not chunk:
                break
            data += chunk
    except (OSError, asyncio.TimeoutError):
        pass
    return data


async def exchange_once(request):
    """One request on a connection of its own: the status, or the kind of failure."""
    try:
        reader, writer = await connect()
    except (OSError, asyncio.TimeoutError) as e:
        return "connect " + type(e).__name__
    try:
        writer.write(request["head"].encode("latin-1"))
        await writer.drain()
    except OSError:
        pass  # a server that refuses early may close before reading it all
    data = await read_all(reader)
    writer.close()
    status = status_of(data)
    return status if status is not None else ("reset" if not data else "garbled")


async def answer_on(reader):
    """One answer on a kept-alive connection: (status, whether the connection may be reused)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    status = status_of(head)
    length, close = None, False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and b"close" in value.lower():
            close = True
    if length is None:
        await read_all(reader)
        return status, False
    await asyncio.wait_for(reader.readexactly(length), 10)
    return status, not close


async def requests_worker(stop, tally, requests, offset, keepalive):
    i = offset
    conn = None
    while not stop.is_set():
        request = requests[i % len(requests)]
        i += 1
        face = request["face"]
        if not keepalive:
            got = await exchange_once(request)
        else:
            try:
                if conn is None:
                    conn = await connect()
                reader, writer = conn
                writer.write(request["head"].replace("Connection: close", "Connection: keep-alive")
                             .encode("latin-1"))
                await writer.drain()
                got, reuse = await answer_on(reader)
                if not reuse:
                    writer.close()
                    conn = None
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                got = "reset " + type(e).__name__
                if conn is not None:
                    conn[1].close()
                conn = None
        tally.count(f"{face} {got}")
        if got != request["expect"]:
            tally.mismatch(f"{face}: {got}, not {request['expect']}")
    if conn is not None:
        conn[1].close()


async def trickler(stop, tally, n, interval):
    """One slowloris connection after another (see the module's doc)."""
    trickle = SPEC["trickle"]
    k = 0
    while not stop.is_set():
        case = trickle[(n + k) % len(trickle)]
        k += 1
        key = (n, k)
        try:
            reader, writer = await connect()
        except (OSError, asyncio.TimeoutError) as e:
            tally.count("connect " + type(e).__name__)
            await asyncio.sleep(interval)
            continue
        tally.opened(key)
        head = case["head"].encode("latin-1")
        body = case["body"]
        answer = asyncio.ensure_future(read_all(reader, seconds=LIMIT * 4))
        try:
            if body:
                writer.write(head)
                await writer.drain()
                drip = b"x" * body
            else:
                drip = head
            for i in range(len(drip)):
                if answer.done() or stop.is_set():
                    break
                writer.write(drip[i:i + 1])
                await writer.drain()
                await asyncio.wait([answer], timeout=interval)
        except OSError:
            pass
        if stop.is_set() and not answer.done():
            answer.cancel()
            writer.close()
            return
        data = await answer
        tally.closed(key)
        writer.close()
        status = status_of(data)
        if body:
            tally.count(f"{case['face']} body {status}")
            if status != case["expect"]:
                tally.mismatch(f"{case['face']} (body trickled): {status}, not {case['expect']}")
        else:
            tally.count(f"{case['face']} head {'cut' if not data else status}")
            if data:
                tally.mismatch(f"{case['face']} (head trickled): answered {status}")


async def idler(stop, tally, n, at_once, held):
    k = 0
    while not stop.is_set():
        k += 1
        key = (n, k)
        try:
            reader, writer = await connect()
        except (OSError, asyncio.TimeoutError) as e:
            tally.count("connect " + type(e).__name__)
            await asyncio.sleep(0.1)
            continue
        opened = time.monotonic()
        tally.opened(key)
        first = SPEC.get("first") or []
        if first and n % 2:
            # Idle after one request, on a kept-alive connection.
            request = first[(n + k) % len(first)]
            try:
                writer.write(request["head"].replace("Connection: close", "Connection: keep-alive")
                             .encode("latin-1"))
                await writer.drain()
                got, _ = await answer_on(reader)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                got = "reset " + type(e).__name__
            if got != request["expect"] and time.monotonic() - opened >= at_once:
                tally.mismatch(f"{request['face']} before idling: {got}, not {request['expect']}")
            if isinstance(got, int):
                tally.count(f"{request['face']} {got} then idle")
        closed = asyncio.ensure_future(reader.read(1))
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait([closed, stopping], return_when=asyncio.FIRST_COMPLETED)
        if not closed.done():
            closed.cancel()
            writer.close()
            return
        stopping.cancel()
        try:
            closed.result()
        except OSError:
            pass
        tally.closed(key)
        writer.close()
        lived = time.monotonic() - opened
        if lived < at_once:
            tally.count("refused at once")
            # Over the cap: try again a little later, as a persistent abuser would.
            await asyncio.sleep(0.05)
        else:
            tally.count("cut when idle")
        held[0] = max(held[0], sum(1 for t in tally.open.values() if time.monotonic() - t >= at_once))


async def sample_held(stop, tally, at_once, held):
    while not stop.is_set():
        now = time.monotonic()
        held[0] = max(held[0], sum(1 for t in tally.open.values() if now - t >= at_once))
        await asyncio.sleep(0.05)


async def main():
    stop = asyncio.Event()
    tally = Tally()
    mode = SPEC["mode"]
    started = time.monotonic()
    held = [0]
    if mode == "requests":
        keepalive = SPEC.get("keepalive", False)
        tasks = [requests_worker(stop, tally, SPEC["requests"], i,
                                 keepalive is True or (keepalive == "mixed" and i % 2 == 0))
                 for i in range(SPEC["concurrency"])]
    elif mode == "slowloris":
        tasks = [trickler(stop, tally, i, SPEC["interval"]) for i in range(SPEC["count"])]
    elif mode == "idle":
        tasks = [idler(stop, tally, i, SPEC["at_once"], held) for i in range(SPEC["count"])]
        tasks.append(sample_held(stop, tally, SPEC["at_once"], held))
    else:
        sys.exit(f"unknown mode {mode}")
    running = [asyncio.ensure_future(t) for t in tasks]
    print("started", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    stop.set()
    summary = tally.summary(seconds=round(time.monotonic() - started, 3), held_max=held[0])
    await asyncio.wait(running, timeout=5)
    for task in running:
        if task.done() and not task.cancelled() and task.exception() is not None:
            tally.mismatch(f"an abusing task failed: {task.exception()!r}")
    summary["wrong"], summary["sent"] = tally.wrong, sum(tally.by.values())
    print(json.dumps(summary), flush=True)


asyncio.run(main())
