"""Events: meetings, conferences and online sessions; RSVPs, waitlists, reminders, attendance, calendars."""
