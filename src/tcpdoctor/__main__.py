from tcpdoctor.cli.main import main

main()
