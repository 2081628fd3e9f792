"""mautrix-python's appservice handler with a no-op event handler: the peer `benches/wrk.rs`
loads side by side with the agent. Run with a Python that has `mautrix` and `aiohttp`:

    python mautrix_appservice.py PORT HS_TOKEN STATE_DIR
"""

import asyncio
import os
import sys

from mautrix.appservice import AppService


async def main(port: int, hs_token: str, state_dir: str) -> None:
    os.chdir(state_dir)  # its state store file (mx-state.json) goes here
    appservice = AppService(
        server="http://127.0.0.1:9",  # never called: the handler does nothing
        domain="bench.local",
        as_token="bench-as",
        hs_token=hs_token,
        bot_localpart="agent",
        id="bench",
    )

    @appservice.matrix_event_handler
    async def on_event(_event) -> None:
        pass

    await appservice.start(host="127.0.0.1", port=port)
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
