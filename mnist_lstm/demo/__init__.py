"""A live page to watch the LSTM read your own handwriting, row by row: `python scripts/demo.py` (docs/demo.md).

app.py: the web app (the page and a JSON API); reading.py: what one request computes; server.py: the script's
work (the checkpoint, the port, uvicorn); static/: the page itself (plain HTML, CSS and JavaScript, no build step).

Why FastAPI and a page of our own, not Gradio: the reading's cursor (a slider, a play button) moves in the
browser over the 28 rows already sent, where a Gradio slider makes a server round trip per step; Gradio's themes
fetch fonts from a CDN, and the page must work offline; and its generated DOM is brittle to test, where ours has
stable ids. Routing, request parsing, static files and errors stay FastAPI's and Starlette's, HTTP uvicorn's.
"""
