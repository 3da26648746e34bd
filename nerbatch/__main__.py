from nerbatch.cli import main

main()
