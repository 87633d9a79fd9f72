"""422 answers a person can act on: FastAPI's validation errors become one sentence under `detail` (the same key
as every other error of the service), with FastAPI's list kept under `errors`, reduced to each problem's type,
place and message. The values sent are left out: they may be bytes, infinite numbers or anything else a client
chose, which neither JSON nor the reader needs."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


async def readable_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    route = getattr(request.scope.get("route"), "path", None)  # the template: the same behind a root_path
    errors = [
        {
            "type": str(error.get("type", "invalid")),
            "loc": [part if isinstance(part, int) else str(part) for part in error.get("loc", ())],
            "msg": str(error.get("msg", "invalid")),
        }
        for error in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": explain(route, errors), "errors": errors})


def explain(route: str | None, errors: list[dict]) -> str:
    missing = [str(error["loc"][-1]) for error in errors if error["type"] == "missing" and error["loc"]]
    if route == "/predict/batch" and "files" in missing:
        return (
            "empty batch: no images in the form field 'files'; send them as multipart/form-data, e.g. "
            "curl -F files=@a.png -F files=@b.png .../predict/batch"
        )
    if "file" in missing:
        return (
            "missing form field 'file': send the image as multipart/form-data (curl -F file=@digit.png .../predict) "
            "or as the body with its type (curl --data-binary @digit.png -H 'Content-Type: image/png' .../predict)"
        )
    first = errors[0] if errors else {}
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid request')}"
