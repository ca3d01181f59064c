"""The studio (``impasto serve``): a local web page that shows a painting as it forms and lets
you steer it, and the small JSON API the page (or a script) drives.

- ``app``: the ASGI app and its routes (Starlette); ``security``: the Host, Origin and token
  guard in front of it; ``server``: uvicorn, for ``impasto serve``.
- ``jobs``: the queue and the one worker thread that runs each run through the run API
  (``impasto.api``), with a cancel flag, its events and previews on demand.
- ``runspec``: a client's JSON request, checked and turned into an ``api.Request``.
- ``uploads``: uploaded images checked before anything is written; the bundled examples.
- ``history``: the gallery, read from the run records in the data folder.
- ``options``: the option controls, made from ``impasto.config``.
- ``static/``: the page (hand-written HTML, CSS and JavaScript; nothing fetched from the web).

Needs the ``web`` extra: ``pip install 'impasto[web]'``.
"""
