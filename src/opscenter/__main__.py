from opscenter.cli import app

app()
