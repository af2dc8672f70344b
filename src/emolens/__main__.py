from emolens.cli import main

main()
