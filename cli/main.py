"""The ``qwen-image`` command.

Exit codes (scripts may rely on them):

  0  success
  1  the task ended without a result (failed or cancelled)
  2  bad usage: an unknown option, a missing or invalid argument
  3  not authenticated or not allowed (HTTP 401/403): run ``qwen-image login``
  4  not found (HTTP 404), e.g. an unknown task id
  5  the service refused the request (any other 4xx: invalid value, quota reached, …)
  6  the service failed or could not be reached (5xx, connection error)
  7  timed out waiting for a result (HTTP 408)
  130  interrupted with Ctrl-C (after asking whether to cancel the task)
"""

from __future__ import annotations

import json
import locale
import os
import re
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

from cli.client import (
    DEFAULT_URL,
    TASK_ID_PATTERN,
    TERMINAL,
    ApiError,
    Client,
    Credentials,
    checked_task_id,
    read_config,
    resolve,
    write_config,
)

EXIT_TASK_FAILED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_NOT_FOUND = 4
EXIT_REFUSED = 5
EXIT_SERVER = 6
EXIT_TIMEOUT = 7
EXIT_INTERRUPTED = 130

RATIOS = ["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3"]
API_KEY_PREFIX = "qis-"  # what the service's API keys start with (auth.security)

app = typer.Typer(
    name="qwen-image",
    help="Qwen Image Service from the command line.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
keys_app = typer.Typer(help="API keys: create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

out = Console()  # results (stdout)
err = Console(stderr=True)  # progress, messages and errors (stderr), so stdout stays parseable

UrlOpt = Annotated[
    Optional[str], typer.Option("--url", help=f"service URL [env QWEN_IMAGE_URL; default {DEFAULT_URL}]")
]
KeyOpt = Annotated[Optional[str], typer.Option("--api-key", help="API key or login token [env QWEN_IMAGE_API_KEY]")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print machine-readable JSON on stdout")]
Steps = Annotated[Optional[int], typer.Option("--steps", min=20, max=100, help="denoising steps (20–100)")]
Cfg = Annotated[Optional[float], typer.Option("--cfg", min=1.0, max=10.0, help="true CFG scale (1–10)")]
Seed = Annotated[int, typer.Option("--seed", min=-1, max=2**32 - 1, help="-1 = random")]
Negative = Annotated[str, typer.Option("--negative", help="negative prompt")]
Output = Annotated[Optional[Path], typer.Option("-o", "--output", help="where to write the PNG (or ZIP)")]
NoWait = Annotated[bool, typer.Option("--no-wait", help="print the task id and return at once")]
Strength = Annotated[
    Optional[float],
    typer.Option(
        "--strength", min=0.0, max=1.0, help="how much is redrawn, above 0 up to 1 (service default 0.6; 1 with a mask)"
    ),
]
Mask = Annotated[
    Optional[Path],
    typer.Option(
        "--mask",
        help="the region to repaint, the image's size: PNG with transparency (transparent = repaint) "
        "or black and white (white = repaint)",
    ),
]
Extend = Annotated[int, typer.Option(min=0, max=2048, help="outpainting: pixels added on this side")]
MAX_LORAS = 3
Lora = Annotated[
    Optional[list[str]],
    typer.Option(
        "--lora",
        metavar="NAME[:SCALE]",
        help=f"a LoRA adapter from `GET /loras`, with a scale (-2…2; default: the adapter's); up to {MAX_LORAS}",
    ),
]
Fast = Annotated[bool, typer.Option("--fast", help="fast mode: the Lightning adapter, a few steps, CFG off")]
Size = Annotated[
    Optional[str], typer.Option("--size", metavar="WxH", help="output size in pixels, e.g. 1024x768 (multiples of 16)")
]


class Options:
    def __init__(self, url: Optional[str], api_key: Optional[str], as_json: bool):
        self.url, self.api_key, self.as_json = url, api_key, as_json


@app.callback()
def main_options(ctx: typer.Context, url: UrlOpt = None, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Qwen Image Service from the command line. Run `qwen-image login` first."""
    ctx.obj = Options(url, api_key, as_json)


def _language() -> str:
    lang = os.environ.get("LC_ALL") or os.environ.get("LANG") or (locale.getlocale()[0] or "")
    return "zh-CN" if lang.lower().startswith("zh") else "en"


def _client(ctx: typer.Context) -> Client:
    options: Options = ctx.obj
    return Client(resolve(options.url, options.api_key), language=_language())


def _json_wanted(ctx: typer.Context, local: bool) -> bool:
    return local or ctx.obj.as_json


def _emit(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, default=str))


def _fail(exc: ApiError, as_json: bool, login_hint: bool = True) -> typer.Exit:
    code = {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 408: EXIT_TIMEOUT}.get(exc.status)
    if code is None:
        code = EXIT_SERVER if exc.status == 0 or exc.status >= 500 else EXIT_REFUSED
    if as_json:
        _emit({"error": exc.detail, "status": exc.status})
    else:
        err.print(
            f"[red]error:[/red] {exc.detail}" if exc.status == 0 else f"[red]error ({exc.status}):[/red] {exc.detail}",
            markup=True,
            highlight=False,
        )
        if code == EXIT_AUTH and exc.status == 401 and login_hint:
            err.print("log in with `qwen-image login`, or pass --api-key / QWEN_IMAGE_API_KEY", highlight=False)
    return typer.Exit(code)


def _run(ctx: typer.Context, as_json: bool, action) -> Any:
    client = _client(ctx)
    try:
        return action(client)
    except ApiError as exc:
        raise _fail(exc, as_json) from None
    finally:
        client.close()


# ------------------------------------------------------------------ log in


@app.command()
def login(
    ctx: typer.Context,
    username: Annotated[Optional[str], typer.Option("--username", "-u")] = None,
    password: Annotated[Optional[str], typer.Option("--password", "-p", help="asked for when left out")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Log in and save the service URL and a token in the config file (mode 0600).

    With --api-key (or QWEN_IMAGE_API_KEY) the key is checked and saved instead.
    """
    as_json = _json_wanted(ctx, as_json)
    credentials = resolve(ctx.obj.url, ctx.obj.api_key)
    key = ctx.obj.api_key or os.environ.get("QWEN_IMAGE_API_KEY")
    client = Client(Credentials(credentials.url, key), language=_language())
    try:
        if key:
            user = client.json("GET", "/auth/me")
            token = key
        else:
            client.json("GET", "/health")  # a wrong URL is said before a password is asked for
            username = username or typer.prompt("username")
            password = password or typer.prompt("password", hide_input=True)
            token = client.json("POST", "/auth/login", json={"username": username, "password": password})[
                "access_token"
            ]
            client.http.headers["Authorization"] = f"Bearer {token}"
            user = client.json("GET", "/auth/me")
    except ApiError as exc:
        raise _fail(exc, as_json, login_hint=False) from None
    finally:
        client.close()
    path = write_config({**read_config(), "url": credentials.url, "token": token})
    if as_json:
        _emit({"username": user["username"], "url": credentials.url, "config": str(path)})
    else:
        err.print(f"logged in to {credentials.url} as {user['username']} (saved in {path})", highlight=False)


@app.command()
def register(
    ctx: typer.Context,
    username: Annotated[Optional[str], typer.Option("--username", "-u", help="3–50 characters, no spaces")] = None,
    password: Annotated[
        Optional[str], typer.Option("--password", "-p", help="at least 6 characters; asked for when left out")
    ] = None,
    email: Annotated[Optional[str], typer.Option("--email")] = None,
    log_in: Annotated[bool, typer.Option("--login/--no-login", help="log in as the new account afterwards")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Create an account (where the service lets anyone register), then log in as it."""
    as_json = _json_wanted(ctx, as_json)
    credentials = resolve(ctx.obj.url, None)
    client = Client(Credentials(credentials.url, None), language=_language())
    try:
        client.json("GET", "/health")  # a wrong URL is said before a password is asked for
    except ApiError as exc:
        client.close()
        raise _fail(exc, as_json, login_hint=False) from None
    username = username or typer.prompt("username")
    password = password or typer.prompt("password", hide_input=True, confirmation_prompt=True)
    request: dict[str, Any] = {"username": username, "password": password}
    if email:
        request["email"] = email
    try:
        user = client.json("POST", "/auth/register", json=request)
        token = None
        if log_in:
            token = client.json("POST", "/auth/login", json={"username": username, "password": password})[
                "access_token"
            ]
    except ApiError as exc:
        raise _fail(exc, as_json, login_hint=False) from None
    finally:
        client.close()
    path = write_config({**read_config(), "url": credentials.url, "token": token}) if token else None
    if as_json:
        _emit({"id": user["id"], "username": user["username"], "url": credentials.url, "logged_in": bool(token)})
    elif token:
        err.print(f"registered {user['username']} at {credentials.url}, logged in (saved in {path})", highlight=False)
    else:
        err.print(f"registered {user['username']} at {credentials.url}; now `qwen-image login`", highlight=False)


@app.command()
def logout(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """End the saved login token at the service and forget it here (the URL stays saved).

    A saved API key is only forgotten: revoke it with `qwen-image keys revoke`."""
    as_json = _json_wanted(ctx, as_json)
    config = read_config()
    token = config.get("token")
    url = resolve(ctx.obj.url, None).url
    ended = False
    if token:
        client = Client(Credentials(url, token), language=_language())
        try:
            client.json("POST", "/auth/logout")
            ended = True
        except ApiError as exc:
            if exc.status not in (401, 403):  # an expired token, or an API key: nothing to end there
                raise _fail(exc, as_json, login_hint=False) from None
        finally:
            client.close()
        write_config({key: value for key, value in config.items() if key != "token"})
    if as_json:
        _emit({"logged_out": bool(token), "token_ended": ended, "url": url})
    elif token:
        err.print(f"logged out of {url}", highlight=False)
    else:
        err.print("not logged in: no saved credential", highlight=False)


@app.command()
def whoami(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Who the service takes you for, at which URL, and with which credential."""
    as_json = _json_wanted(ctx, as_json)
    credentials = resolve(ctx.obj.url, ctx.obj.api_key)
    if not credentials.token:
        raise _fail(ApiError(401, f"no credential for {credentials.url}"), as_json)
    user = _run(ctx, as_json, lambda c: c.json("GET", "/auth/me"))
    kind = "API key" if credentials.token.startswith(API_KEY_PREFIX) else "login token"
    if as_json:
        _emit({**user, "url": credentials.url, "credential": kind})
        return
    role = "admin" if user.get("is_admin") else "user"
    out.print(f"{user['username']} ({role} #{user['id']}) at {credentials.url}, with a {kind}", highlight=False)


# ------------------------------------------------------------------ generation


def _submit_and_finish(
    ctx: typer.Context, as_json: bool, path: str, data: dict, files: list, output: Optional[Path], no_wait: bool
) -> None:
    client = _client(ctx)
    try:
        accepted = client.json("POST", path, data={k: str(v) for k, v in data.items()}, files=files or None)
        task_id = checked_task_id(accepted.get("task_id"))
        if no_wait:
            if as_json:
                _emit(accepted)
            else:
                out.print(task_id, highlight=False)
            return
        final = _follow_with_progress(client, task_id, as_json)
        _finish(client, task_id, final, output, as_json)
    except ApiError as exc:
        raise _fail(exc, as_json) from None
    finally:
        client.close()


def _follow_with_progress(client: Client, task_id: str, as_json: bool) -> dict:
    """A live bar with queue position (on stderr); Ctrl-C asks whether to cancel the task."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=as_json,
    )
    bar = progress.add_task(f"{task_id[:8]} queued", total=100)

    def show(update: dict) -> None:
        status = update["status"]
        if status == "pending":
            position = update.get("position")
            label = f"queued, position {position}" if position else "queued"
        elif status == "running" and update.get("total_steps"):
            label = f"step {update.get('current_step')}/{update.get('total_steps')}"
        else:
            label = status
        fields: dict[str, Any] = {"description": f"{task_id[:8]} {label}"}
        if update.get("percent") is not None:
            fields["completed"] = float(update["percent"])
        progress.update(bar, **fields)

    try:
        with progress:
            return client.follow(task_id, show)
    except KeyboardInterrupt:
        _interrupted(client, task_id, as_json)
        raise  # not reached: _interrupted exits


def _interrupted(client: Client, task_id: str, as_json: bool) -> None:
    err.print()
    try:
        cancel = typer.confirm(f"Cancel task {task_id}?", default=True, err=True)
    except (typer.Abort, KeyboardInterrupt, EOFError):
        cancel = False
    if cancel:
        try:
            answer = client.json("DELETE", f"/tasks/{task_id}")
            final = answer.get("status")
            if final not in TERMINAL:  # a running task stops at its next step
                err.print(f"stopping task {task_id}…", highlight=False)
                final = client.follow(task_id, lambda update: None)["status"]
            err.print(f"task {task_id}: {final}", highlight=False)
            if as_json:
                _emit({"task_id": task_id, "status": final, "interrupted": True})
        except ApiError as exc:
            err.print(f"could not cancel: {exc.detail}", highlight=False)
    else:
        err.print(f"task {task_id} goes on; see `qwen-image status {task_id}`", highlight=False)
        if as_json:
            _emit({"task_id": task_id, "status": "running", "interrupted": True})
    raise typer.Exit(EXIT_INTERRUPTED)


def _finish(client: Client, task_id: str, final: dict, output: Optional[Path], as_json: bool) -> None:
    if final["status"] != "completed":
        if as_json:
            _emit({"task_id": task_id, "status": final["status"], "error": final.get("error")})
        else:
            err.print(
                f"[red]task {task_id} {final['status']}[/red]" + (f": {final['error']}" if final.get("error") else ""),
                markup=True,
                highlight=False,
            )
        raise typer.Exit(EXIT_TASK_FAILED)
    path, response = _download(client, task_id, output)
    summary = {
        "task_id": task_id,
        "status": "completed",
        "file": str(path),
        "media_type": response.headers.get("content-type"),
        "seed": _int(response.headers.get("x-seed")),
        # The completed event says it; the download's header too while the service still holds the task.
        "generation_seconds": final.get("generation_seconds")
        if final.get("generation_seconds") is not None
        else _float(response.headers.get("x-generation-seconds")),
    }
    if as_json:
        _emit(summary)
    else:
        err.print(f"saved {path} (seed {summary['seed']})", highlight=False)


def _download(client: Client, task_id: str, output: Optional[Path], wait: bool = True):
    task_id = checked_task_id(task_id)
    response = client.request(
        "GET", f"/tasks/{task_id}/result", params={"wait": str(wait).lower()}, timeout=None if wait else 60
    )
    if response.status_code == 202:
        raise ApiError(409, f"task {task_id} is still {response.json().get('status')}")
    extension = "zip" if "zip" in response.headers.get("content-type", "") else "png"
    path = output or Path(f"{task_id}.{extension}")
    path.write_bytes(response.content)
    return path, response


def _int(value: Optional[str]) -> Optional[int]:
    return int(value) if value and value.lstrip("-").isdigit() else None


def _float(value: Optional[str]) -> Optional[float]:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def _files(paths: list[Path], field: str, param_hint: str = "IMAGE") -> list:
    files = []
    for path in paths:
        if not path.is_file():
            raise typer.BadParameter(f"{path} is not a file", param_hint=param_hint)
        suffix = path.suffix.lower().lstrip(".")
        media = {"jpg": "image/jpeg", "jpeg": "image/jpeg", "webp": "image/webp"}.get(suffix, "image/png")
        files.append((field, (path.name, path.read_bytes(), media)))
    return files


def _adapter_fields(loras: Optional[list[str]], fast: bool) -> dict[str, Any]:
    """The ``loras`` (``name:scale,…``) and ``speed`` fields; the names are checked by the service."""
    fields: dict[str, Any] = {}
    if loras:
        if len(loras) > MAX_LORAS:
            raise typer.BadParameter(f"at most {MAX_LORAS} adapters, got {len(loras)}", param_hint="--lora")
        for lora in loras:
            name, _, scale = lora.partition(":")
            if not name.strip() or "," in lora or (scale and not _is_number(scale)):
                raise typer.BadParameter(f"{lora!r} is not NAME or NAME:SCALE", param_hint="--lora")
        fields["loras"] = ",".join(loras)
    if fast:
        fields["speed"] = "fast"
    return fields


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _size(value: Optional[str]) -> Optional[tuple[int, int]]:
    """``--size WxH`` as (width, height); the service checks the sides' range and multiple."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d{2,5})\s*[xX×]\s*(\d{2,5})\s*", value)
    if not match:
        raise typer.BadParameter(f"{value!r} is not a size such as 1024x768", param_hint="--size")
    return int(match.group(1)), int(match.group(2))


@app.command()
def generate(
    ctx: typer.Context,
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="what to draw")],
    output: Output = None,
    ratio: Annotated[
        Optional[str], typer.Option("--ratio", help="aspect ratio: " + ", ".join(RATIOS) + " (default 1:1)")
    ] = None,
    size: Size = None,
    steps: Steps = None,
    cfg: Cfg = None,
    seed: Seed = -1,
    count: Annotated[int, typer.Option("-n", "--count", min=1, max=4, help="number of images (1–4)")] = 1,
    negative: Negative = "",
    lora: Lora = None,
    fast: Fast = False,
    no_wait: NoWait = False,
    as_json: JsonOpt = False,
) -> None:
    """Text to image: one PNG (several images: a ZIP)."""
    if ratio is not None and ratio not in RATIOS:
        raise typer.BadParameter(f"{ratio!r} is not one of {', '.join(RATIOS)}", param_hint="--ratio")
    pixels = _size(size)
    if ratio is not None and pixels is not None:
        raise typer.BadParameter("give either --ratio or --size", param_hint="--size")
    data: dict[str, Any] = {"prompt": prompt, "seed": seed, "num_images": count, "negative_prompt": negative}
    if pixels is not None:
        data["width"], data["height"] = pixels
    else:
        data["aspect_ratio"] = ratio or "1:1"
    if steps is not None:
        data["num_inference_steps"] = steps
    if cfg is not None:
        data["true_cfg_scale"] = cfg
    data.update(_adapter_fields(lora, fast))
    _submit_and_finish(ctx, _json_wanted(ctx, as_json), "/text-to-image", data, [], output, no_wait)


def _check_strength(strength: Optional[float]) -> None:
    # typer's range is closed; the service wants strength above 0
    if strength is not None and strength <= 0:
        raise typer.BadParameter(f"{strength} is not above 0", param_hint="--strength")


def _check_ratio(value: str, option: str) -> None:
    parts = value.split(":")
    if not (len(parts) == 2 and all(p.isascii() and p.isdigit() and 1 <= int(p) <= 100 for p in parts)):
        raise typer.BadParameter(f"{value!r} is not a ratio such as 16:9", param_hint=option)


@app.command()
def img2img(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="the image to redraw")],
    prompt: Annotated[str, typer.Argument(metavar="PROMPT", help="what the result shows")],
    output: Output = None,
    strength: Strength = None,
    mask: Mask = None,
    extend_left: Extend = 0,
    extend_top: Extend = 0,
    extend_right: Extend = 0,
    extend_bottom: Extend = 0,
    extend_to: Annotated[
        Optional[str], typer.Option("--extend-to", metavar="RATIO", help="outpainting: extend, centred, to e.g. 16:9")
    ] = None,
    ratio: Annotated[
        Optional[str], typer.Option("--ratio", help="output ratio: " + ", ".join(RATIOS) + " (default: the input's)")
    ] = None,
    width: Annotated[
        Optional[int], typer.Option("--width", help="output width, a multiple of 16, with --height")
    ] = None,
    height: Annotated[Optional[int], typer.Option("--height", help="output height, with --width")] = None,
    size: Size = None,
    steps: Steps = None,
    cfg: Cfg = None,
    seed: Seed = -1,
    count: Annotated[int, typer.Option("-n", "--count", min=1, max=4, help="number of images (1–4)")] = 1,
    negative: Negative = "",
    lora: Lora = None,
    fast: Fast = False,
    no_wait: NoWait = False,
    as_json: JsonOpt = False,
) -> None:
    """Image to image: redraw IMAGE at a strength, repaint a --mask (inpainting) or extend the
    canvas with --extend-* or --extend-to (outpainting)."""
    _check_strength(strength)
    sides = {"left": extend_left, "top": extend_top, "right": extend_right, "bottom": extend_bottom}
    if extend_to is not None:
        _check_ratio(extend_to, "--extend-to")
        if any(sides.values()):
            raise typer.BadParameter("give either --extend-to or the --extend-* sides", param_hint="--extend-to")
    if mask is not None and (extend_to is not None or any(sides.values())):
        raise typer.BadParameter("a mask and outpainting do not go together", param_hint="--mask")
    if ratio is not None and ratio not in RATIOS:
        raise typer.BadParameter(f"{ratio!r} is not one of {', '.join(RATIOS)}", param_hint="--ratio")
    if (width is None) != (height is None):
        raise typer.BadParameter("give both --width and --height", param_hint="--width/--height")
    pixels = _size(size)
    if pixels is not None:
        if width is not None:
            raise typer.BadParameter("give either --size or --width/--height", param_hint="--size")
        width, height = pixels
    if ratio is not None and width is not None:
        raise typer.BadParameter("give either --ratio or --size (--width/--height)", param_hint="--ratio")
    data: dict[str, Any] = {"prompt": prompt, "seed": seed, "num_images": count, "negative_prompt": negative}
    optional = {
        "strength": strength,
        "extend_to": extend_to,
        "aspect_ratio": ratio,
        "width": width,
        "height": height,
        "num_inference_steps": steps,
        "true_cfg_scale": cfg,
        **{f"extend_{side}": pixels or None for side, pixels in sides.items()},
    }
    data.update({key: value for key, value in optional.items() if value is not None})
    data.update(_adapter_fields(lora, fast))
    files = _files([image], "image") + (_files([mask], "mask", "--mask") if mask is not None else [])
    _submit_and_finish(ctx, _json_wanted(ctx, as_json), "/image-to-image", data, files, output, no_wait)


@app.command()
def edit(
    ctx: typer.Context,
    arguments: Annotated[
        list[str], typer.Argument(metavar="IMAGE [IMAGE] PROMPT", help="one or two images, then the edit prompt")
    ],
    output: Output = None,
    steps: Steps = None,
    cfg: Cfg = None,
    guidance: Annotated[Optional[float], typer.Option("--guidance", min=1.0, max=10.0)] = None,
    seed: Seed = -1,
    count: Annotated[int, typer.Option("-n", "--count", min=1, max=4)] = 1,
    negative: Negative = "",
    mask: Mask = None,
    strength: Strength = None,
    lora: Lora = None,
    fast: Fast = False,
    no_wait: NoWait = False,
    as_json: JsonOpt = False,
) -> None:
    """Edit one image, or compose two, with a prompt; with --mask, repaint only that region of one image."""
    if not 2 <= len(arguments) <= 3:
        raise typer.BadParameter("give one or two images and then the prompt", param_hint="IMAGE [IMAGE] PROMPT")
    *images, prompt = arguments
    _check_strength(strength)
    if mask is not None and len(images) != 1:
        raise typer.BadParameter("a mask goes with one image", param_hint="--mask")
    if strength is not None and mask is None:
        raise typer.BadParameter("--strength applies to masked edits: give --mask too", param_hint="--strength")
    data: dict[str, Any] = {"prompt": prompt, "seed": seed, "num_images": count, "negative_prompt": negative}
    for key, value in (
        ("num_inference_steps", steps),
        ("true_cfg_scale", cfg),
        ("guidance_scale", guidance),
        ("strength", strength),
    ):
        if value is not None:
            data[key] = value
    data.update(_adapter_fields(lora, fast))
    files = _files([Path(p) for p in images], "images")
    if mask is not None:
        files += _files([mask], "mask", "--mask")
    _submit_and_finish(ctx, _json_wanted(ctx, as_json), "/image-edit", data, files, output, no_wait)


@app.command()
def batch(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(metavar="IMAGE", help="the image to edit")],
    prompts: Annotated[str, typer.Argument(metavar="PROMPTS", help='edit prompts separated by "|" (at most 10)')],
    output: Output = None,
    steps: Steps = None,
    cfg: Cfg = None,
    seed: Seed = -1,
    negative: Negative = "",
    lora: Lora = None,
    fast: Fast = False,
    no_wait: NoWait = False,
    as_json: JsonOpt = False,
) -> None:
    """Several edits of one image: one result image per prompt (a ZIP when more than one)."""
    data: dict[str, Any] = {"prompts": prompts, "seed": seed, "negative_prompt": negative}
    for key, value in (("num_inference_steps", steps), ("true_cfg_scale", cfg)):
        if value is not None:
            data[key] = value
    data.update(_adapter_fields(lora, fast))
    _submit_and_finish(
        ctx, _json_wanted(ctx, as_json), "/image-edit/batch", data, _files([image], "image"), output, no_wait
    )


# ------------------------------------------------------------------ tasks

TaskId = Annotated[
    str, typer.Argument(metavar="ID", help="task id, or its first characters (at least 4) as `history` shows them")
]
SHORT_ID = 8  # characters of a task id the tables show
TASK_ID_PREFIX = re.compile(r"^[0-9a-f][0-9a-f-]{3,34}$")
PREFIX_SEARCH_PAGES = 10  # of 100 tasks: a prefix is looked for among your 1,000 newest tasks


def _task_id(client: Client, value: str) -> str:
    """A full task id: ``value`` itself, or the one of your tasks that starts with it."""
    value = value.strip().lower()
    if TASK_ID_PATTERN.match(value) or not TASK_ID_PREFIX.match(value):
        return value  # the service judges anything else (and answers 404 for a stranger's id)
    found: list[str] = []
    for page in range(1, PREFIX_SEARCH_PAGES + 1):
        body = client.json("GET", "/tasks/history/me", params={"page": page, "page_size": 100})
        found += [item["task_id"] for item in body["items"] if item["task_id"].startswith(value)]
        if page >= body["total_pages"]:
            break
    if not found:
        raise ApiError(404, f"none of your tasks has an id starting with {value}")
    if len(found) > 1:
        raise ApiError(400, f"{value} starts several task ids ({', '.join(f[:13] for f in found[:3])}…): give more")
    return found[0]


def _local_time(value: Optional[str]) -> str:
    """An ISO time from the service in this computer's time zone, to the second."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)[:19]
    if moment.tzinfo is None:  # the service's times are UTC
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _print_table(columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> None:
    """Rows under a header, one line each, fitting the terminal (80 columns too): every column as
    wide as its widest cell but the last, which is cut with "…" where the line would be too long."""
    widths = [max([len(column)] + [len(row[index]) for row in rows]) for index, column in enumerate(columns[:-1])]
    room = max(out.width - sum(widths) - 2 * len(widths), 10)

    def line(cells: tuple[str, ...]) -> str:
        last = cells[-1] if len(cells[-1]) <= room else cells[-1][: room - 1] + "…"
        return "  ".join([cell.ljust(width) for cell, width in zip(cells, widths, strict=False)] + [last]).rstrip()

    print(line(columns))
    print("  ".join(["─" * width for width in widths] + ["─" * min(room, max(len(columns[-1]), 8))]))
    for row in rows:
        print(line(row))


# What the task types are called in the tables: the command that makes each
TYPE_NAMES = {"text_to_image": "generate", "image_edit": "edit", "batch_edit": "batch", "image_to_image": "img2img"}


@app.command()
def status(ctx: typer.Context, task_id: TaskId, as_json: JsonOpt = False) -> None:
    """A task's state, queue position and progress."""
    as_json = _json_wanted(ctx, as_json)
    body = _run(ctx, as_json, lambda c: c.json("GET", f"/tasks/{_task_id(c, task_id)}"))
    if as_json:
        _emit(body)
        return
    progress = body.get("progress") or {}
    out.print(
        f"{body['task_id']}  {body['status']}  {progress.get('percent', 0)}%  "
        f"queue position {body.get('position_in_queue')}  seed {body.get('seed')}",
        highlight=False,
    )
    if body.get("error"):
        out.print(f"error: {body['error']}", highlight=False)


@app.command()
def result(
    ctx: typer.Context,
    task_id: TaskId,
    output: Output = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait for an unfinished task")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Download a task's PNG or ZIP."""
    as_json = _json_wanted(ctx, as_json)
    path, response = _run(ctx, as_json, lambda c: _download(c, _task_id(c, task_id), output, wait))
    summary = {
        "task_id": response.headers.get("x-task-id") or task_id,
        "file": str(path),
        "media_type": response.headers.get("content-type"),
        "seed": _int(response.headers.get("x-seed")),
    }
    if as_json:
        _emit(summary)
    else:
        err.print(f"saved {path}", highlight=False)


@app.command()
def cancel(ctx: typer.Context, task_id: TaskId, as_json: JsonOpt = False) -> None:
    """Cancel a pending or running task."""
    as_json = _json_wanted(ctx, as_json)
    body = _run(ctx, as_json, lambda c: c.json("DELETE", f"/tasks/{_task_id(c, task_id)}"))
    if as_json:
        _emit(body)
    else:
        out.print(f"{body.get('task_id', task_id)}: {body.get('status')} ({body.get('message')})", highlight=False)


@app.command()
def history(
    ctx: typer.Context,
    status_filter: Annotated[
        Optional[str], typer.Option("--status", help="pending, running, completed, failed, cancelled")
    ] = None,
    task_type: Annotated[
        Optional[str], typer.Option("--type", help="text_to_image, image_edit, batch_edit, image_to_image")
    ] = None,
    since: Annotated[Optional[str], typer.Option("--from", help="ISO date or datetime")] = None,
    until: Annotated[Optional[str], typer.Option("--to", help="ISO date or datetime")] = None,
    page: Annotated[int, typer.Option("--page", min=1)] = 1,
    page_size: Annotated[int, typer.Option("--page-size", min=1, max=100)] = 20,
    all_users: Annotated[bool, typer.Option("--all", help="every user's tasks (admin)")] = False,
    user_id: Annotated[Optional[int], typer.Option("--user-id", help="with --all: one user's tasks")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Your past tasks, newest first, with the contract's filters and pages."""
    as_json = _json_wanted(ctx, as_json)
    params = {
        "page": page,
        "page_size": page_size,
        "status": status_filter,
        "task_type": task_type,
        "start_date": since,
        "end_date": until,
        "user_id": user_id if all_users else None,
    }
    params = {k: v for k, v in params.items() if v is not None}
    path = "/tasks/history/all" if all_users else "/tasks/history/me"
    body = _run(ctx, as_json, lambda c: c.json("GET", path, params=params))
    if as_json:
        _emit(body)
        return
    if not body["items"]:
        filtered = any(v is not None for v in (status_filter, task_type, since, until, user_id)) or page > 1
        message = "no tasks match these filters" if filtered else "no tasks yet: make one with `qwen-image generate`"
        err.print(message, highlight=False)
        return
    rows = [
        (
            item["task_id"][:SHORT_ID],
            _local_time(item["created_at"]),
            TYPE_NAMES.get(item["task_type"], item["task_type"]),
            item["status"],
            f"{item['execution_time']:.1f}" if item.get("execution_time") is not None else "",
            " ".join(str(item["prompt"]).split()),
        )
        for item in body["items"]
    ]
    _print_table(("id", "created", "type", "status", "secs", "prompt"), rows)
    err.print(
        f"page {body['page']} of {max(body['total_pages'], 1)}, {body['total']} tasks; "
        "ids are the first characters (status, result and cancel take them)",
        highlight=False,
    )


@app.command()
def quota(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Your quota: used and remaining today and this month."""
    as_json = _json_wanted(ctx, as_json)
    body = _run(ctx, as_json, lambda c: c.json("GET", "/tasks/quota/me"))
    if as_json:
        _emit(body)
        return
    out.print(
        f"today: {body['used_today']} / {body['daily_limit']} (remaining {body['remaining_today']}"
        + (f", resets {body['daily_resets_at']}" if body.get("daily_resets_at") else "")
        + ")",
        highlight=False,
    )
    out.print(
        f"this month: {body['used_this_month']} / {body['monthly_limit']} (remaining {body['remaining_this_month']})",
        highlight=False,
    )


# ------------------------------------------------------------------ API keys


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="a name to recognise the key by")],
    expires_in_days: Annotated[
        Optional[int], typer.Option("--expires-in-days", min=1, max=365, help="default: 90 days")
    ] = None,
    never_expires: Annotated[bool, typer.Option("--never-expires", help="a key that never expires")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create an API key (use it with --api-key or QWEN_IMAGE_API_KEY); it is shown once."""
    as_json = _json_wanted(ctx, as_json)
    request: dict[str, Any] = {"name": name}
    if never_expires or expires_in_days is not None:
        request["expires_in_days"] = None if never_expires else expires_in_days
    body = _run(ctx, as_json, lambda c: c.json("POST", "/auth/api-keys", json=request))
    if as_json:
        _emit(body)
    else:
        secret = body.get("key") or body.get("api_key") or body.get("secret")
        out.print(secret or json.dumps(body, ensure_ascii=False), highlight=False)
        err.print("store it now: it cannot be shown again", highlight=False)


@keys_app.command("list")
def keys_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Your API keys (never their secrets)."""
    as_json = _json_wanted(ctx, as_json)
    body = _run(ctx, as_json, lambda c: c.json("GET", "/auth/api-keys"))
    items = body.get("items", body) if isinstance(body, dict) else body
    if as_json:
        _emit(body)
        return
    if not items:
        err.print("no API keys: create one with `qwen-image keys create NAME`", highlight=False)
        return
    rows = [
        (
            str(item.get("id", "")),
            str(item.get("prefix") or ""),
            _local_time(item.get("created_at")),
            _local_time(item.get("last_used_at")) or "never",
            _local_time(item.get("expires_at")) or "never",
            str(item.get("name") or ""),
        )
        for item in items
    ]
    columns = ("id", "prefix", "created", "last used", "expires", "name")
    _print_table(columns, rows)


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(metavar="KEY_ID", help="the key's id")],
    as_json: JsonOpt = False,
) -> None:
    """Revoke an API key: it stops working at once."""
    as_json = _json_wanted(ctx, as_json)
    response = _run(ctx, as_json, lambda c: c.request("DELETE", f"/auth/api-keys/{key_id}"))
    body = response.json() if response.content else {"id": key_id, "revoked": True}
    if as_json:
        _emit(body)
    else:
        out.print(f"revoked {key_id}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
