"""The browser app: ``generation`` checks a request and samples it through the pipeline (no web framework),
``gradio_app`` lays out the page and the ``generate`` API endpoint over it (needs the ``app`` extra)."""
