"""`obliviate ui`: a local web app over the same Python API as the command line (`runner` holds the work, `app`
the Gradio page)."""
