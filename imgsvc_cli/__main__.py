from imgsvc_cli.app import main

main()
