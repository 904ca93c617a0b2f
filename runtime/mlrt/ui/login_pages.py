"""Signing in and out of the UI under the controller service (see :mod:`mlrt.ui.auth`)."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from mlrt.ui.app import render
from mlrt.ui.auth import COOKIE, PREFIX, Context, check_form, form_fields, safe_next, same_origin, session_principal

router = APIRouter()


@router.get("/login")
def login_page(request: Request, ctx: Context, next: str = PREFIX + "/") -> Response:
    if not ctx.login_required:
        return RedirectResponse(safe_next(next), status_code=303)
    return render(request, "login.html", {"next": safe_next(next), "problem": ""})


@router.post("/login")
async def login(request: Request, ctx: Context) -> Response:
    """Check the token once and keep it in the session cookie."""
    if not same_origin(request):
        raise HTTPException(403, "form posted from another site")
    fields = await form_fields(request)
    target = safe_next(fields.get("next"))
    if not ctx.login_required:
        return RedirectResponse(target, status_code=303)
    token = fields.get("token", "").strip()
    found = await run_in_threadpool(session_principal, ctx.store, token) if token else None
    if found is None:
        problem = "token: unknown, revoked or a worker's token; create one with mlrt tokens create"
        return render(request, "login.html", {"next": target, "problem": problem}, 401)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path=PREFIX,
    )
    return response


@router.post("/logout")
async def logout(request: Request, ctx: Context) -> Response:
    await check_form(request, ctx)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="strict")
    return response
