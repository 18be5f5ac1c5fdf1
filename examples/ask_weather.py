"""Ask examples/weather_agent.py each way a caller can.

python examples/ask_weather.py [--exchange NAME]
"""

from __future__ import annotations

import argparse
import sys

from messaging import BaseAgent, ConnectionPool, RemoteError, RequestTimeoutError
from messaging.config import load_config
from messaging.generated.messages_pb2 import QueryRequest, QueryResponse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--exchange", default="chimera.events")
    args = parser.parse_args(argv)
    with ConnectionPool(load_config().rabbitmq) as pool:
        caller = BaseAgent(pool, "asker", exchange_name=args.exchange)  # no handlers: asks only
        now = caller.request(
            QueryRequest(query="Lisbon"), "weather.now", timeout=10, response_type=QueryResponse
        )
        print("now:", now.answer)
        try:
            caller.request(QueryRequest(query="Atlantis"), "weather.now", timeout=10)
        except RemoteError as error:
            print("error:", error.error_type, "-", error.remote_message)
        try:
            caller.request(QueryRequest(query="x"), "weather.slow", timeout=0.5)
        except RequestTimeoutError:
            print("slow: gave up after 0.5s (the agent is told)")
        hours = [
            r.answer
            for r in caller.stream(
                QueryRequest(query="Oslo"),
                "weather.hourly",
                timeout=10,
                response_type=QueryResponse,
            )
        ]
        print(f"hourly: {len(hours)} replies, first {hours[0]!r}, last {hours[-1]!r}")
        everyone = caller.gather(QueryRequest(query="Porto"), "weather.now", timeout=1)
        print("gathered from:", ", ".join(everyone.agents))
        caller.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
