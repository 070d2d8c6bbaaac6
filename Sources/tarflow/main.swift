import ArgumentParser

TarflowCommand.main()
