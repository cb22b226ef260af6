from sms_replies.cli import main

main()
