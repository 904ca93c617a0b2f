"""The web UI: pages of runs, a run, comparisons and tuning jobs, rendered on the server.

Served at ``/ui`` by ``mlrt ui`` (the local store, one user, no token) and by
``mlrt controller`` (mounted on the service's app; a login page takes an API
token once and keeps it in an HttpOnly, SameSite=Strict cookie; a user token
sees its project's runs only). :func:`mlrt.ui.app.create_ui` builds the
application; everything renders offline: Jinja2 templates (autoescaped) in
``templates/``, a small stylesheet and script of our own in ``static/``
(served at ``/ui/static/``), charts drawn as SVG on the server
(:mod:`mlrt.ui.charts`).

Adding a page: write a module with a ``router = fastapi.APIRouter()`` whose
paths are relative to ``/ui`` and add the module's name to :data:`PAGES`.
A route asks for what it needs with the annotations of :mod:`mlrt.ui.auth`:

- ``Viewer``: who looks (a :class:`mlrt.service.auth.Principal`; the local
  user under ``mlrt ui``). Without a session a page redirects to the login
  page and a fragment request is 401;
- ``Context``: the :class:`mlrt.ui.auth.UiContext` (``store``, ``wake``);

and :func:`mlrt.ui.auth.visible_run` gives a run the viewer may see (404
otherwise, another project's runs included). :func:`mlrt.ui.app.render`
renders a template that extends ``base.html`` (blocks ``title`` and
``content``); a form that changes something posts ``csrf`` (the template
global ``csrf_token()``) and its route calls :func:`mlrt.ui.auth.check_form`.

A fragment that updates by itself is an element with ``data-live="URL"``:
``static/ui.js`` fetches URL every few seconds and replaces the element's
content, until the answer carries ``X-Mlrt-Live: done`` (the run ended).

Paths (what pages link to): ``/ui/`` the runs, ``/ui/runs/{run_id}`` a run,
``/ui/compare?run=ID&run=ID`` runs side by side, ``/ui/tuning/{run_id}`` a
tuning job.
"""

PAGES = (
    "mlrt.ui.login_pages",
    "mlrt.ui.runs_pages",
    "mlrt.ui.run_pages",
    "mlrt.ui.chart_pages",
    "mlrt.ui.compare_pages",
    "mlrt.ui.tuning_pages",
)
"""Modules whose ``router`` the UI includes, in this order."""
