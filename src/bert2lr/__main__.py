from bert2lr.cli import main

main()
