"""A live page to watch the LSTM read your own handwriting, row by row: `python scripts/demo.py` (docs/demo.md).
app.py: the web app (the page, a JSON API, what a request computes); server.py: the checkpoint, the port, uvicorn.

Why FastAPI and a page of our own (static/: plain HTML, CSS and JavaScript), not Gradio: the reading's cursor moves
in the browser over the 28 rows already sent, where a Gradio slider makes a server round trip per step; Gradio's
themes fetch fonts from a CDN, and the page must work offline; its generated DOM is brittle to test, ours has ids.
"""
