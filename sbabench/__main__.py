from sbabench.cli import main

main()
