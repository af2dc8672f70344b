from emolens.cli.app import main

main()
