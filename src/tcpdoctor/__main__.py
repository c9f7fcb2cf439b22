from tcpdoctor.cli.main import run

run()
