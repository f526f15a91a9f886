"""What the gRPC fakes share: a server on a loopback port serving generic handlers, built
from the generated protobuf types behind the client libraries' proto-plus wrappers."""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from typing import Any, NoReturn

import grpc

Handler = Callable[[Any, grpc.ServicerContext], Any]


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("abort raises")


def unary(fn: Handler, request: Any) -> grpc.RpcMethodHandler:
    return grpc.unary_unary_rpc_method_handler(
        fn,
        request_deserializer=request.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )


class GrpcFake:
    """Serves `handlers()` ({service name: {method: handler}}) from `start()` to `stop()`."""

    workers = 8

    def __init__(self) -> None:
        self._server: grpc.Server | None = None
        self.address = ""

    def handlers(self) -> dict[str, dict[str, grpc.RpcMethodHandler]]:
        raise NotImplementedError

    def start(self) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers))
        server.add_generic_rpc_handlers(
            tuple(
                grpc.method_handlers_generic_handler(name, methods)
                for name, methods in self.handlers().items()
            )
        )
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._server = server
        self.address = f"127.0.0.1:{port}"
        return self.address

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None)
            self._server = None
