from affbatch.cli import run

run()
